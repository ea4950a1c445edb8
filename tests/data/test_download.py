"""Named corpora: the real download code against a local HTTP server on 127.0.0.1."""

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import gentext
from gentext.config import CorpusConfig
from gentext.data import download
from gentext.data.download import NamedCorpus, RemoteFile, fetch
from gentext.errors import GentextError
from tests.conftest import TINY_SETTINGS, TINY_TEXT

BODY = TINY_TEXT.encode()
VALID = b"The quick brown fox jumps over the lazy dog.\n" * 20


class Handler(BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (the http.server API)
        Handler.requests.append(self.path)
        files = {"/good.txt": BODY, "/valid.txt": VALID, "/bad.txt": BODY[:-1] + b"!"}
        if self.path in files:
            self.send_response(200)
            self.send_header("Content-Length", str(len(files[self.path])))
            self.end_headers()
            self.wfile.write(files[self.path])
        elif self.path == "/truncated.txt":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))  # promises more than it sends
            self.end_headers()
            self.wfile.write(BODY[: len(BODY) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404, "Not Found")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENTEXT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def remote(server, path, body=BODY):
    return RemoteFile(path.strip("/"), server + path, hashlib.sha256(body).hexdigest())


def leftovers(cache):
    return sorted(p.name for p in cache.rglob("*") if p.is_file())


def test_good_file_is_downloaded_once_verified_and_cached(server, cache):
    before = len(Handler.requests)
    path = fetch("local", remote(server, "/good.txt"))
    assert path == cache / "local" / "good.txt" and path.read_bytes() == BODY
    assert fetch("local", remote(server, "/good.txt")) == path
    assert len(Handler.requests) == before + 1  # the second call used the cache
    assert fetch("local", remote(server, "/good.txt"), offline=True) == path


def test_wrong_checksum_is_refused_and_not_kept(server, cache):
    with pytest.raises(GentextError, match="SHA-256 does not match.*save it as"):
        fetch("local", remote(server, "/bad.txt"))
    assert leftovers(cache) == []


def test_truncated_download_is_refused_and_not_kept(server, cache):
    with pytest.raises(GentextError, match="cut short|does not match"):
        fetch("local", remote(server, "/truncated.txt"))
    assert leftovers(cache) == []


def test_404_names_the_url_and_the_manual_path(server, cache):
    with pytest.raises(GentextError, match=r"HTTP 404.*save it as .*missing.txt"):
        fetch("local", remote(server, "/missing.txt"))
    assert leftovers(cache) == []


def test_offline_without_cache_says_where_to_put_the_file(server, cache):
    with pytest.raises(GentextError, match="--offline.*save it as"):
        fetch("local", remote(server, "/good.txt"), offline=True)


def test_no_network_is_a_clear_error(cache):
    with pytest.raises(GentextError, match="could not download.*save it as"):
        fetch("local", RemoteFile("x.txt", "http://127.0.0.1:9/x.txt", "0" * 64), timeout=5)


@pytest.mark.slow
def test_train_on_a_named_corpus_uses_its_own_split(server, tmp_path, monkeypatch):
    corpus = NamedCorpus("a test corpus", remote(server, "/good.txt"), remote(server, "/valid.txt", VALID))
    monkeypatch.setitem(download.NAMED_CORPORA, "local-test", corpus)
    summary = gentext.train(tmp_path / "run", corpus=CorpusConfig(builtin="local-test"), steps=3, **TINY_SETTINGS)
    assert summary["steps"] == 3
    model = gentext.load(tmp_path / "run")
    assert model.config.sources == ("corpus:local-test",)
    assert model.evaluate()["tokens"] == len(VALID) - 1  # validation is the corpus' valid file
