"""Pure trading domain: state machines, quantities, money. No I/O, no threads, no broker."""
