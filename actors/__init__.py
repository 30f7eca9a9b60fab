"""Pykka actors: thin shells around the domain (message -> domain -> persist -> tell)."""
