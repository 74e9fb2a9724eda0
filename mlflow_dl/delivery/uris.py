"""Tracking URIs and what a call to one tells: redacted for printing, probed for an answer, a lost connection
told from a refused record, and a run's artifact sub-folder checked."""

from __future__ import annotations


def _with_login(uri: str, login: str) -> str:
    """`uri` with `login` ("user@" or "") in place of the user:password it carries."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=f"{login}{host}"))


def redact(uri: str) -> str:
    """A tracking URI without the password it may carry (http://user:secret@host -> http://user@host)."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    return uri if parts.password is None else _with_login(uri, f"{parts.username}@")


def artifact_path(path: str | None) -> str | None:
    """A user's artifact sub-folder, normalised; refused if it leaves the run's artifact root."""
    import posixpath

    if path is None or path in ("", "."):
        return None
    norm = posixpath.normpath(str(path).replace("\\", "/"))
    if norm.startswith(("/", "../")) or norm == ".." or ":" in norm.split("/")[0]:
        from mlflow_dl.errors import ConfigError

        raise ConfigError(f"artifact_path={path!r} is invalid; expected a relative folder inside the run (no '..', "
                          "no absolute path)")
    return None if norm == "." else norm


def reachable(uri: str, timeout: float = 2.0) -> bool:
    """Whether an HTTP tracking server answers /health within `timeout` s (a local store always does)."""
    if not uri.startswith(("http://", "https://")):
        return True
    import urllib.error
    import urllib.request

    # urllib cannot open a URL with user:password in it; /health needs no login
    try:
        with urllib.request.urlopen(f"{_with_login(uri, '').rstrip('/')}/health", timeout=timeout):
            return True
    except urllib.error.HTTPError as exc:  # it answered: 401 from a proxy guarding /health; 502-504 from a proxy
        return exc.code < 500  # whose server is away
    except OSError:
        return False


def connection_lost(exc: BaseException) -> bool:
    """Whether a tracking call failed because the server did not answer (after MLflow's retries)."""
    text = str(exc)
    return any(s in text for s in ("Max retries exceeded", "Connection refused", "Read timed out",
                                   "Failed to establish a new connection", "Connection aborted"))
