"""URLs: parsed once, checked, and shown without their secrets.

Camera URLs (``rtsp://user:pass@host/...``), webhook URLs and the service's other addresses may
carry credentials: a password, a token given as the user name (``rtsp://TOKEN@host/``), or a
secret query value (``?token=...``). Every place that takes such a URL parses it here
(:func:`parse_url`: scheme, host, port; one :class:`UrlError` naming the problem) and every
place that shows one, or shows a message that may quote one (FFmpeg's errors do), shows it
through :func:`redact_url` or :func:`scrub`, so a credential never reaches a status page, a log
line, an MQTT message or a key of a weaker role.

This module sits at the base of the package (it imports only :mod:`marginface.errors`).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from marginface.errors import DataError

__all__ = ["SECRET_QUERY_KEYS", "ParsedUrl", "UrlError", "parse_url", "redact_url", "scrub"]

#: Query parameters whose values are secrets (compared case-insensitively).
SECRET_QUERY_KEYS = re.compile(
    r"^(pass(word|wd)?|pwd|secret|token|access_token|auth(_?token)?|key|api_?key|"
    r"sig(nature)?|credentials?)$",
    re.I,
)
#: What a redacted secret shows.
HIDDEN = "***"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class UrlError(DataError, ValueError):
    """A URL that cannot be used: malformed, of a scheme not allowed here, without a host. A
    :class:`DataError` for the CLI and the service, a :class:`ValueError` for pydantic
    settings (which then name the field)."""


@dataclass(frozen=True)
class ParsedUrl:
    """A URL taken apart once: ``scheme`` in lower case, ``host`` (None without one), ``port``
    (None when not given), the credentials, and the ``text`` it came from (stripped)."""

    text: str
    scheme: str
    host: str | None
    port: int | None
    username: str | None
    password: str | None
    path: str
    query: str

    @property
    def has_credentials(self) -> bool:
        """Whether the URL carries a user name or a password (``user:pass@``, ``TOKEN@``)."""
        return self.username is not None or self.password is not None

    @property
    def redacted(self) -> str:
        """The URL as it may be shown (:func:`redact_url`)."""
        return redact_url(self.text)


def scheme_of(text: str) -> str:
    """The URL's scheme in lower case, or ``""`` when ``text`` does not start with one (a
    path such as ``/videos/door.mp4`` or ``C:\\videos``: a single letter is a drive)."""
    match = _SCHEME.match(text.strip())
    if match is None or len(match.group(0)) == 2:
        return ""
    return match.group(0)[:-1].lower()


def parse_url(
    text: str,
    *,
    schemes: Collection[str] | None = None,
    what: str = "URL",
    require_host: bool = True,
) -> ParsedUrl:
    """``text`` taken apart, or :class:`UrlError` saying why it cannot be used: empty, white
    space or control characters inside it, a scheme outside ``schemes`` (lower case; None:
    any), no host (when ``require_host``), a malformed port. Messages show the URL redacted;
    ``what`` names it ("camera URL", "webhook URL")."""
    if not isinstance(text, str):
        raise UrlError(f"the {what} must be text")
    text = text.strip()
    if not text:
        raise UrlError(f"the {what} is empty")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise UrlError(
            f"the {what} {redact_url(text)!r} contains white space or a control character"
        )
    scheme = scheme_of(text)
    if schemes is not None and scheme not in schemes:
        allowed = ", ".join(f"{s}://" for s in sorted(schemes))
        found = f"the scheme {scheme + ':'!r}" if scheme else "no scheme"
        raise UrlError(f"the {what} {redact_url(text)!r} has {found}: use {allowed}")
    try:
        parts = urlsplit(text)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise UrlError(f"the {what} {redact_url(text)!r} is malformed (its host or port)") from None
    if require_host and not host:
        raise UrlError(f"the {what} {redact_url(text)!r} has no host")
    return ParsedUrl(
        text=text,
        scheme=scheme,
        host=host or None,
        port=port,
        username=parts.username,
        password=parts.password,
        path=parts.path,
        query=parts.query,
    )


def redact_url(url: str, *, query: bool = True) -> str:
    """``url`` as it may be shown: a password hidden (``rtsp://user:***@host``), a user name
    given without a password hidden too, since it is then usually a token
    (``rtsp://***@host``), and secret-looking query values (``?token=``, ``password``,
    ``key``, ``sig``...) hidden; ``query=False`` drops the query and fragment altogether (for
    URLs whose query may hold anything, such as webhooks). Text that is not a URL with a
    scheme (a file path, ``webcam:0``) is returned unchanged."""
    text = str(url)
    if not scheme_of(text):
        return text
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, sep, _ = userinfo.partition(":")
        userinfo = f"{user}:{HIDDEN}" if sep else HIDDEN
        netloc = f"{userinfo}@{host}"
    kept_query, fragment = parts.query, parts.fragment
    if not query:
        kept_query, fragment = "", ""
    elif kept_query:
        pairs = parse_qsl(kept_query, keep_blank_values=True)
        if any(SECRET_QUERY_KEYS.match(k) for k, _ in pairs):
            kept_query = urlencode(
                [(k, HIDDEN if SECRET_QUERY_KEYS.match(k) else v) for k, v in pairs], safe="*"
            )
    if (netloc, kept_query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return text
    return urlunsplit((parts.scheme, netloc, parts.path, kept_query, fragment))


def _secrets(url: str) -> list[str]:
    """The credentials ``url`` carries, raw and as written: password, user-only token, secret
    query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    netloc = parts.netloc
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        user, sep, password = userinfo.partition(":")
        found += [password] if sep else [user]
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if SECRET_QUERY_KEYS.match(key):
            found.append(value)
    out: list[str] = []
    for secret in found:
        if not secret:
            continue
        for form in (secret, unquote(secret)):
            if form and form not in out:
                out.append(form)
    return sorted(out, key=len, reverse=True)


def scrub(text: str | None, *urls: str) -> str | None:
    """``text`` (an error message, a log line) with each of ``urls`` shown redacted and every
    credential they carry replaced by ``***`` wherever else it appears (FFmpeg quotes URLs in
    its own ways)."""
    if not text:
        return text
    for url in urls:
        if not url:
            continue
        redacted = redact_url(url)
        if redacted != url:
            text = text.replace(url, redacted)
        for secret in _secrets(url):
            text = text.replace(secret, HIDDEN)
    return text
