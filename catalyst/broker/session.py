"""The HTTP session under alpaca-py's clients: requests' own transport adapter, without requests' per-call setup.

Why: alpaca-py calls `session.request(method, url, headers=..., json=... | params=..., allow_redirects=False)` for
every broker call. `requests.Session.request` then merges cookies, hooks, auth and environment settings and checks
each argument against typing Protocols: about 0.6 ms of CPU per call on our machines, more than the HTTP exchange
itself (0.4 ms), spent on every stop-loss submit and on every fill's protection while a hundred positions fill at
once. Alpaca uses none of what that setup serves (no cookies, no redirects: alpaca-py forbids them, no auth
hooks: its keys are headers). So this session builds the PreparedRequest directly, as `prepare()` would for the
only shapes alpaca-py sends, and hands it to the mounted adapter: the same `HTTPAdapter.send` (connection pool,
timeout, TLS verification, proxy, urllib3 error → requests exception mapping, `Response`), so alpaca-py's error
handling and ours (`classify`) see exactly what they saw before.
"""

from __future__ import annotations

import json as jsonlib
from typing import Any
from urllib.parse import urlencode

from requests import PreparedRequest, Response, Session
from requests.structures import CaseInsensitiveDict
from requests.utils import requote_uri


class LeanSession(Session):
    """A requests Session whose `request` serves alpaca-py's calls without the general-purpose preparation."""

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        params: Any = None,
        data: Any = None,
        headers: Any = None,
        json: Any = None,
        allow_redirects: bool = False,
        timeout: Any = None,
        **unexpected: Any,
    ) -> Response:
        if data is not None or allow_redirects or unexpected or not url.startswith(("http://", "https://")):
            # Not a shape alpaca-py sends (or a URL requests must judge, with its own clear error): take requests'
            # full path rather than guess.
            return super().request(method, url, params=params, data=data, headers=headers, json=json,
                                   allow_redirects=allow_redirects, timeout=timeout, **unexpected)
        prepared = PreparedRequest()
        prepared.method = method.upper()
        prepared.url = requote_uri(_with_query(url, params))
        prepared.headers = CaseInsensitiveDict(self.headers)
        prepared.headers.update(headers or {})
        prepared.body = None
        if json is not None:
            # As requests' prepare_body: NaN is refused, the body is UTF-8 bytes with its length.
            prepared.body = jsonlib.dumps(json, allow_nan=False).encode("utf-8")
            prepared.headers.setdefault("Content-Type", "application/json")
            prepared.headers["Content-Length"] = str(len(prepared.body))
        elif prepared.method not in ("GET", "HEAD"):
            prepared.headers["Content-Length"] = "0"
        prepared.hooks = {"response": []}
        adapter = self.get_adapter(prepared.url)
        return adapter.send(prepared, stream=False, timeout=timeout, verify=self.verify, cert=self.cert,
                            proxies=self.proxies)


def _with_query(url: str, params: Any) -> str:
    """requests' query encoding for a mapping: None values dropped, sequences repeated (`doseq`)."""
    if not params:
        return url
    pairs = []
    for key, values in dict(params).items():
        for value in [values] if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__") else values:
            if value is not None:  # a str enum is sent as its value (str.encode), as requests sends it
                pairs.append((key, value.encode("utf-8") if isinstance(value, str) else value))
    if not pairs:
        return url
    query = urlencode(pairs)
    return f"{url}&{query}" if "?" in url else f"{url}?{query}"
