"""``marginface.urls``: URLs parsed once, credentials never shown (user-only tokens included),
and the rules every URL setting shares."""

from __future__ import annotations

import pytest

from marginface.errors import DataError
from marginface.urls import UrlError, parse_url, redact_url, scrub

TOKEN = "tok3n-abcdef0123456789"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://admin:s3cret@cam:554/live", "rtsp://admin:***@cam:554/live"),
        (f"rtsp://{TOKEN}@cam/live", "rtsp://***@cam/live"),  # a token as the user name
        ("rtsp://:s3cret@cam/live", "rtsp://:***@cam/live"),
        (
            "http://cam/snap.jpg?user=bob&token=abc&res=hd",
            "http://cam/snap.jpg?user=bob&token=***&res=hd",
        ),
        ("https://h/x?sig=abc&api_key=def", "https://h/x?sig=***&api_key=***"),
        ("http://cam/mjpg", "http://cam/mjpg"),
        ("/videos/door.mp4", "/videos/door.mp4"),
        ("webcam:0", "webcam:0"),
        ("push:", "push:"),
    ],
)
def test_redaction(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redaction_without_query() -> None:
    assert (
        redact_url("https://u:p@hooks/in?anything=x#frag", query=False) == "https://u:***@hooks/in"
    )


def test_scrub_hides_every_form_of_a_credential() -> None:
    url = f"rtsp://{TOKEN}@10.0.0.5/live"
    message = f"cannot connect to {url}: 401 Unauthorized for user {TOKEN}"
    assert TOKEN not in scrub(message, url)  # type: ignore[operator]
    assert "rtsp://***@10.0.0.5/live" in scrub(message, url)  # type: ignore[operator]
    encoded = "rtsp://admin:p%40ss@cam/x"
    assert "p@ss" not in scrub("auth p@ss failed", encoded)  # type: ignore[operator]
    assert scrub(None, url) is None


def test_parse_url_rules() -> None:
    url = parse_url(" https://user:pw@hooks.lan:8443/in?x=1 ", schemes=("http", "https"))
    assert (url.scheme, url.host, url.port, url.username, url.password) == (
        "https",
        "hooks.lan",
        8443,
        "user",
        "pw",
    )
    assert url.has_credentials and url.redacted == "https://user:***@hooks.lan:8443/in?x=1"
    assert not parse_url("http://h/x").has_credentials
    for bad, words in (
        ("", "empty"),
        ("ftp://h/x", "scheme 'ftp:'"),
        ("hooks.lan/in", "no scheme"),
        ("http://", "no host"),
        ("http://h:99999/x", "malformed"),
        ("http://h:port/x", "malformed"),
        ("http://h/a b", "white space"),
        ("http://h/\x00", "control"),
    ):
        with pytest.raises(UrlError, match=words):
            parse_url(bad, schemes=("http", "https"))
    # One error for the CLI and the service (DataError) and for pydantic (ValueError).
    assert issubclass(UrlError, DataError) and issubclass(UrlError, ValueError)
    with pytest.raises(UrlError) as err:
        parse_url("ftp://u:s3cret@h/x", schemes=("http",))
    assert "s3cret" not in str(err.value)


def test_a_gallery_url_with_a_password_is_never_echoed() -> None:
    from marginface.errors import GalleryError
    from marginface.gallery.db import normalise_url

    with pytest.raises(GalleryError, match="unsupported gallery URL") as err:
        normalise_url("mysql://admin:s3cret@db.lan/gallery")
    assert "s3cret" not in str(err.value) and "admin:***@db.lan" in str(err.value)
