"""Downloads against an HTTP server on 127.0.0.1 that the tests start, serving archives they build."""

import hashlib
import io
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ssr_lib import download


class FileServer(BaseHTTPRequestHandler):
    """Serve `files` with Range support; cut `truncate` paths after half their bytes."""

    files = {}
    truncate = set()
    ignore_range = set()
    ranges_seen = []

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        range_header = self.headers.get("Range")
        self.ranges_seen.append(range_header)
        if range_header and self.path not in self.ignore_range:
            start = int(range_header.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if self.path in self.truncate:
            payload = payload[: len(payload) // 2]
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    FileServer.files, FileServer.truncate, FileServer.ignore_range = {}, set(), set()
    FileServer.ranges_seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FileServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield FileServer, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def tar_bytes(members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def sha256(content):
    return hashlib.sha256(content).hexdigest()


def test_fetch_complete_file(server, tmp_path):
    handler, base = server
    handler.files["/data.bin"] = bytes(range(256)) * 5000
    path = download.fetch(f"{base}/data.bin", tmp_path / "data.bin", sha256(handler.files["/data.bin"]),
                          progress=False)
    assert path.read_bytes() == handler.files["/data.bin"]
    assert not (tmp_path / "data.bin.part").exists()


def test_truncated_transfer_resumes(server, tmp_path):
    handler, base = server
    content = bytes(range(256)) * 8000
    handler.files["/big.bin"] = content
    handler.truncate.add("/big.bin")
    with pytest.raises(download.DownloadError, match="Run again to resume"):
        download.fetch(f"{base}/big.bin", tmp_path / "big.bin", sha256(content), progress=False)
    partial = tmp_path / "big.bin.part"
    assert not (tmp_path / "big.bin").exists()
    assert partial.stat().st_size == len(content) // 2

    handler.truncate.clear()
    download.fetch(f"{base}/big.bin", tmp_path / "big.bin", sha256(content), progress=False)
    assert handler.ranges_seen[-1] == f"bytes={len(content) // 2}-"
    assert (tmp_path / "big.bin").read_bytes() == content


def test_server_ignoring_range_restarts(server, tmp_path):
    handler, base = server
    content = b"abcdefgh" * 1000
    handler.files["/plain.bin"] = content
    handler.ignore_range.add("/plain.bin")
    (tmp_path / "plain.bin.part").write_bytes(content[:100])
    download.fetch(f"{base}/plain.bin", tmp_path / "plain.bin", sha256(content), progress=False)
    assert (tmp_path / "plain.bin").read_bytes() == content


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    handler, base = server
    handler.files["/data.bin"] = b"real content"
    with pytest.raises(download.DownloadError, match="Checksum mismatch"):
        download.fetch(f"{base}/data.bin", tmp_path / "data.bin", sha256(b"other content"), progress=False)
    assert not (tmp_path / "data.bin").exists()
    assert not (tmp_path / "data.bin.part").exists()


def test_missing_file_is_an_error(server, tmp_path):
    _, base = server
    with pytest.raises(download.DownloadError, match="HTTP 404"):
        download.fetch(f"{base}/absent.tar", tmp_path / "absent.tar", progress=False)


def test_extract_tar_and_zip(tmp_path):
    archive = tmp_path / "faces.tar.gz"
    archive.write_bytes(tar_bytes({"faces/a.jpg": b"a", "faces/sub/b.jpg": b"b"}))
    target = download.extract(archive, tmp_path / "out")
    assert (target / "faces" / "sub" / "b.jpg").read_bytes() == b"b"
    assert (target / download.COMPLETE_MARKER).is_file()

    zip_path = tmp_path / "weights.zip"
    with zipfile.ZipFile(zip_path, "w") as zip_file:
        zip_file.writestr("repo/pre-trained/imdb/m/m.h5", b"w")
    assert (download.extract(zip_path, tmp_path / "zip_out") / "repo" / "pre-trained" / "imdb" / "m" / "m.h5").is_file()


@pytest.mark.parametrize("member", ["../escape", "/tmp/absolute_escape", "faces/../../escape"])
def test_extract_rejects_escaping_members(tmp_path, member):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(tar_bytes({"faces/fine.jpg": b"ok", member: b"bad"}))
    with pytest.raises(download.UnsafeArchiveError, match="outside"):
        download.extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "out.partial").exists()
    assert not (tmp_path / "escape").exists()


def test_extract_rejects_escaping_zip_member(tmp_path):
    zip_path = tmp_path / "evil.zip"
    with zipfile.ZipFile(zip_path, "w") as zip_file:
        zip_file.writestr("../escape", b"bad")
    with pytest.raises(download.UnsafeArchiveError):
        download.extract(zip_path, tmp_path / "out")
    assert not (tmp_path / "escape").exists()


def test_extract_rejects_link_out_of_target(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("faces/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../outside"
        tar.addfile(link)
    archive = tmp_path / "link.tar"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(download.UnsafeArchiveError):
        download.extract(archive, tmp_path / "out")


def test_download_dataset_end_to_end(server, tmp_path, monkeypatch):
    handler, base = server
    content = tar_bytes({"wiki_crop/wiki.mat": b"meta", "wiki_crop/00/x.jpg": b"img"})
    handler.files["/wiki_crop.tar"] = content
    source = download.Source(f"{base}/wiki_crop.tar", "wiki_crop.tar", "wiki", sha256(content))
    monkeypatch.setitem(download.SOURCES, "wiki", source)
    target = download.download("wiki", tmp_path)
    assert (target / "wiki_crop" / "wiki.mat").read_bytes() == b"meta"


def test_install_released_weights(tmp_path):
    model = tmp_path / "repo" / "pre-trained" / "imdb" / "ssrnet_3_3_3_64_1.0_1.0"
    model.mkdir(parents=True)
    (model / "ssrnet_3_3_3_64_1.0_1.0.h5").write_bytes(b"w")
    (model / "history_ssrnet_3_3_3_64_1.0_1.0.h5").write_bytes(b"h")
    assert download.install_released_weights(tmp_path / "repo", tmp_path / "pretrained") == 1
    assert (tmp_path / "pretrained" / "imdb" / "ssrnet_3_3_3_64_1.0_1.0" / "ssrnet_3_3_3_64_1.0_1.0.h5").is_file()


def test_manual_dataset_explains(tmp_path):
    with pytest.raises(ValueError, match="UTKFace.tar.gz"):
        download.download("utkface", tmp_path)
