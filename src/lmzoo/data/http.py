"""A polite HTTP session for the online collectors (`wiki_fetch`, `qa_pairs`).

Wikimedia asks API clients for a descriptive User-Agent with a way to contact the operator
and for modest request rates (https://meta.wikimedia.org/wiki/User-Agent_policy); LLM APIs
answer 429 with a Retry-After header when a quota is used up. So every request here goes
through one session that
- sends the User-Agent it was given (`user_agent()` builds one with a contact),
- keeps at most `rate` requests per second (spaced evenly, never in bursts),
- retries connection errors, timeouts, 429 and 5xx with exponential backoff
  (`backoff` * 2**attempt seconds), waiting at least as long as a Retry-After header says,
- gives up with a one-line `LmzooError` naming the URL, the last failure and the fix.
Other 4xx answers are not retried (asking again will not help): they raise `HttpStatusError`,
which carries the status so callers can name the likely fix (a wrong key, model or title).
"""
from __future__ import annotations

import email.utils
import math
import time
import urllib.parse
from typing import Any

from lmzoo import __version__
from lmzoo.errors import LmzooError

INSTALL_HINT = "pip install 'lmzoo[collect]'"
RETRY_STATUS = {408, 425, 429}  # and every 5xx


class HttpStatusError(LmzooError):
    """A non-retryable HTTP error answer (4xx other than 408/425/429)."""

    def __init__(self, message: str, status: int, detail: str):
        super().__init__(message)
        self.status, self.detail = status, detail


def _requests():
    try:
        import requests
    except ImportError:
        raise LmzooError(f"collecting data online needs the requests library; {INSTALL_HINT}") from None
    return requests


def check_url(url: str, flag: str) -> str:
    """An http(s) URL with a host, or a one-line error naming the flag."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LmzooError(f"{flag} {url!r} is not an http(s) URL; pass e.g. https://example.org/w/api.php")
    return url


def user_agent(tool: str, contact: str | None = None) -> str:
    """`lmzoo/0.1.0 (wiki-fetch; contact: you@example.org) python-requests/2.32`."""
    requests = _requests()
    who = f"contact: {contact}" if contact else "no contact given, see --contact"
    return f"lmzoo/{__version__} ({tool}; {who}) python-requests/{requests.__version__}"


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _detail(response: Any) -> str:
    """The error message of an API's error body, on one line and short."""
    try:
        body = response.json()
    except ValueError:
        text = response.text
    else:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            text = error.get("message") or error.get("info") or str(error)
        elif isinstance(body, dict):
            text = str(error or body.get("detail") or body.get("message") or body.get("title") or body)
        else:
            text = str(body)
    return " ".join(str(text).split())[:200]


class PoliteSession:
    """`requests.Session` with a User-Agent, a rate limit, retries and timeouts (module docstring)."""

    def __init__(self, agent: str, *, rate: float = 1.0, retries: int = 5, backoff: float = 1.0,
                 max_wait: float = 120.0, timeout: float = 30.0):
        finite = all(math.isfinite(v) for v in (rate, backoff, timeout, max_wait))
        if not finite or not rate > 0 or retries < 0 or backoff < 0 or not timeout > 0 or max_wait < 0:
            raise LmzooError(f"--rate and --timeout must be finite and > 0, --retries and --backoff finite and >= 0; "
                             f"got rate {rate}, timeout {timeout}, retries {retries}, backoff {backoff}")
        requests = _requests()
        self.rate, self.retries, self.backoff, self.max_wait, self.timeout = rate, retries, backoff, max_wait, timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = agent
        self.requests = 0  # requests sent, retries included
        self._next_at = 0.0

    def get_json(self, url: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return self.json("GET", url, params=params, **kwargs)

    def post_json(self, url: str, body: Any, **kwargs: Any) -> Any:
        return self.json("POST", url, json=body, **kwargs)

    def json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self.request(method, url, **kwargs)
        try:
            return response.json()
        except ValueError:
            snippet = " ".join(response.text.split())[:80]
            raise LmzooError(f"{url} did not answer with JSON (got {snippet!r}); check the URL") from None

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        """The response to a request, after retries; a one-line LmzooError when none succeeds."""
        requests = _requests()
        retryable = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
        reason = ""
        for attempt in range(self.retries + 1):
            self._wait_turn()
            self.requests += 1
            wait = None
            try:
                response = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except retryable as err:
                reason = type(err).__name__
            except requests.RequestException as err:  # a malformed URL and the like: retrying cannot help
                raise LmzooError(f"cannot request {url} ({type(err).__name__}: {err}); check the URL") from None
            else:
                status = response.status_code
                if status < 400:
                    return response
                detail = _detail(response)
                if status not in RETRY_STATUS and status < 500:
                    raise HttpStatusError(f"{url} answered HTTP {status} ({detail})", status, detail)
                reason, wait = f"HTTP {status}: {detail}", _retry_after(response.headers.get("Retry-After"))
            if attempt < self.retries:
                delay = self.backoff * 2 ** attempt
                time.sleep(min(self.max_wait, delay if wait is None else max(wait, delay)))
        raise LmzooError(f"{method} {url} failed {self.retries + 1} times (last: {reason}); check the URL and "
                         "your network, or retry later (rerunning resumes)")

    def _wait_turn(self) -> None:
        """Space request starts 1/rate seconds apart."""
        now = time.monotonic()
        if now < self._next_at:
            time.sleep(self._next_at - now)
        self._next_at = max(now, self._next_at) + 1.0 / self.rate
