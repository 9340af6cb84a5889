"""The known HTTP/2 attacks against Ferry's own HTTP/2 transport (its gRPC port), each from one connection for a
bounded time while a normal gRPC client keeps calling on another: rapid reset (CVE-2023-44487), a CONTINUATION
flood, PING and SETTINGS floods whose answers are never read, a client that grants no flow-control window, and an
HPACK bomb. Each must leave the server's memory bounded and its normal clients answered; the attacker is cut off
where the protocol allows. Each prints what the attack cost the server (CPU seconds, RSS) and what the normal
client saw; docs/RELIABILITY.md quotes them."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from ferry.protocol.oip_grpc import Stub
from support.grpc_requests import infer_request
from support.h2client import (
    CONTINUATION,
    DATA,
    GOAWAY,
    HEADERS,
    PING,
    RST_STREAM,
    SETTINGS,
    RawH2,
    error_code,
    grpc_headers,
    message,
)
from support.servers import start_predictor

MiB = 1 << 20
ENHANCE_YOUR_CALM, PROTOCOL_ERROR, CANCEL = 11, 1, 8
REQUEST = infer_request(np.array([[0.1, 0.2, 0.3, 0.4]]))
HEADERS_FIELDS = grpc_headers()


@pytest.fixture(scope="module")
def target(repo_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "attacked.log"
    proc = start_predictor(repo_dir / "churn", log, "--model_name=churn", "--request_read_timeout_s=2")
    yield proc
    proc.stop()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def under_attack(target, attack, name: str) -> dict:
    """Run ``attack(raw)`` on a fresh raw connection in a thread while a normal gRPC client calls on its own
    channel; returns what the attack returned, with the server's CPU and RSS and the normal calls' latency."""
    pid = target.process.pid
    result: dict = {}
    raw = RawH2(target)
    cpu_before, rss_before = cpu_seconds(pid), rss(pid)
    thread = threading.Thread(target=lambda: result.update(attack(raw)))
    thread.start()
    latencies, peak = [], rss_before
    with grpc.insecure_channel(target.grpc_address) as channel:
        stub = Stub(channel)
        while thread.is_alive():
            started = time.perf_counter()
            stub.ModelInfer(REQUEST, timeout=10)  # raises if a normal client is not answered
            latencies.append(time.perf_counter() - started)
            peak = max(peak, rss(pid))
            time.sleep(0.02)
    thread.join()
    with contextlib.suppress(OSError):
        raw.sock.close()
    result.update(
        cpu_s=cpu_seconds(pid) - cpu_before,
        rss_growth=peak - rss_before,
        normal_p50_ms=float(np.median(latencies)) * 1000 if latencies else float("nan"),
        normal_max_ms=max(latencies) * 1000 if latencies else float("nan"),
        normal_calls=len(latencies),
    )
    print(
        f"\n{name}: server CPU {result['cpu_s']:.2f} s, RSS +{result['rss_growth'] / MiB:.1f} MiB; normal gRPC "
        f"calls meanwhile: {result['normal_calls']}, p50 {result['normal_p50_ms']:.1f} ms, max "
        f"{result['normal_max_ms']:.1f} ms; { ({k: v for k, v in result.items() if k.startswith('attack_')}) }"
    )
    return result


def goaway_code(raw: RawH2, wait_s: float = 5.0) -> int | None:
    """The error code of the GOAWAY the server sends (None if it closes without one or sends none in time)."""
    raw.sock.settimeout(wait_s)
    with contextlib.suppress(OSError):
        while (got := raw.read_frame()) is not None:
            if got[0] == GOAWAY:
                return error_code(got)
    return None


def test_rapid_reset_is_cut_off_with_enhance_your_calm(target):
    def attack(raw: RawH2) -> dict:
        body = message(REQUEST)
        sent, sid = 0, 1
        deadline = time.monotonic() + 3
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline:
                batch = b""
                for _ in range(100):
                    block = raw.encoder.encode(HEADERS_FIELDS)
                    batch += raw.frame(HEADERS, 0x4, sid, block) + raw.frame(DATA, 0x1, sid, body)
                    batch += raw.frame(RST_STREAM, 0, sid, CANCEL.to_bytes(4, "big"))
                    sid += 2
                raw.sock.sendall(batch)
                sent += 100
        return {"attack_streams_reset": sent, "attack_goaway": goaway_code(raw)}

    result = under_attack(target, attack, "rapid reset")
    assert result["attack_goaway"] == ENHANCE_YOUR_CALM
    assert result["rss_growth"] < 64 * MiB


def test_continuation_flood_is_a_protocol_error(target):
    def attack(raw: RawH2) -> dict:
        sent = 0
        block = raw.encoder.encode(HEADERS_FIELDS)
        with contextlib.suppress(OSError):
            raw.sock.sendall(raw.frame(HEADERS, 0, 1, block))  # no END_HEADERS: CONTINUATION must follow
            filler = raw.frame(CONTINUATION, 0, 1, b"\x40\x01a\x01b" * 3000)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                raw.sock.sendall(filler)
                sent += len(filler)
        return {"attack_bytes_sent": sent, "attack_goaway": goaway_code(raw)}

    result = under_attack(target, attack, "CONTINUATION flood")
    assert result["attack_goaway"] == PROTOCOL_ERROR
    assert (
        result["attack_bytes_sent"] < 8 * MiB
    )  # cut off after the header-list limit, not after 3 s of bytes


@pytest.mark.parametrize("kind", ["PING", "SETTINGS"])
def test_control_frame_floods_with_the_reader_stopped_stay_bounded(target, kind):
    """The client sends PINGs (or SETTINGS) as fast as it can and never reads the ACKs. Past its allowance
    (a burst of 1,000, then 100 a second) it is told ENHANCE_YOUR_CALM and disconnected; until then the server
    stops reading it whenever its write buffer is full, so nothing piles up in the server."""

    def attack(raw: RawH2) -> dict:
        frame = raw.frame(PING, 0, 0, b"12345678") if kind == "PING" else raw.frame(SETTINGS, 0, 0)
        batch = frame * 1000
        sent, cut_off_after = 0, None
        raw.sock.setblocking(False)
        started = time.monotonic()
        while time.monotonic() < started + 5:
            try:
                sent += raw.sock.send(batch)
            except BlockingIOError:
                time.sleep(0.01)
            except (
                OSError
            ):  # the server closed it (its GOAWAY is lost in the reset: the flood was left unread)
                cut_off_after = round(time.monotonic() - started, 2)
                break
        return {"attack_frames_sent": sent // len(frame), "attack_cut_off_after_s": cut_off_after}

    result = under_attack(target, attack, f"{kind} flood, reader stopped")
    assert result["attack_cut_off_after_s"] is not None, "a flood of control frames was never cut off"
    assert result["rss_growth"] < 64 * MiB


def test_a_client_that_grants_no_window_loses_its_answers_at_the_deadline(target):
    def attack(raw: RawH2) -> dict:
        raw.sock.sendall(raw.frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 0)))  # INITIAL_WINDOW_SIZE 0
        batch = b""
        for index in range(200):
            sid = 1 + 2 * index
            batch += raw.frame(HEADERS, 0x4, sid, raw.encoder.encode(HEADERS_FIELDS))
            batch += raw.frame(DATA, 0x1, sid, message(REQUEST))
        raw.sock.sendall(batch)
        resets, started = set(), time.monotonic()
        raw.sock.settimeout(6)
        with contextlib.suppress(OSError):
            while len(resets) < 200 and (got := raw.read_frame()) is not None:
                if got[0] == RST_STREAM and error_code(got) == CANCEL:
                    resets.add(got[2])
                elif got[0] == SETTINGS and not got[1] & 1:
                    raw.sock.sendall(raw.frame(SETTINGS, 1, 0))
        return {"attack_streams_reset": len(resets), "attack_seconds": round(time.monotonic() - started, 1)}

    result = under_attack(target, attack, "zero window")
    assert result["attack_streams_reset"] == 200
    assert result["rss_growth"] < 64 * MiB


def test_an_hpack_bomb_is_refused_at_the_header_list_limit(target):
    """One 4 KiB header inserted into the dynamic table, then header blocks that name it 1,000 times each (one
    byte per reference): 4 MB of headers from 1 KB on the wire, against a 64 KiB header-list limit."""

    def attack(raw: RawH2) -> dict:
        # By hand, never indexed, so the dynamic table holds exactly the one entry the bomb names.
        fields = b"".join(
            b"\x00" + bytes([len(n)]) + n.encode() + bytes([len(v)]) + v.encode() for n, v in HEADERS_FIELDS
        )
        insert = b"\x40\x07x-bomb1\x7f\x81\x1f" + b"a" * 4096  # literal with incremental indexing, 4096 bytes
        bomb = b"\xbe" * 1000  # indexed field 62: the newest dynamic-table entry
        outcome = None
        with contextlib.suppress(OSError):
            raw.sock.sendall(raw.frame(HEADERS, 0x5, 1, fields + insert))
            raw.sock.sendall(raw.frame(HEADERS, 0x5, 3, fields + bomb))
            raw.sock.settimeout(5)
            while (got := raw.read_frame()) is not None:
                if got[0] == GOAWAY or (got[0] == RST_STREAM and got[2] >= 3):
                    outcome = ("GOAWAY" if got[0] == GOAWAY else "RST_STREAM", error_code(got))
                    break
        return {"attack_refused_with": outcome}

    result = under_attack(target, attack, "HPACK bomb")
    assert result["attack_refused_with"] is not None
    assert result["rss_growth"] < 64 * MiB


def test_the_server_is_still_whole_after_every_attack(target):
    with socket.create_connection(("127.0.0.1", target.grpc_port), timeout=5):
        pass
    with grpc.insecure_channel(target.grpc_address) as channel:
        response = Stub(channel).ModelInfer(REQUEST, timeout=10)
        assert response.model_name == "churn"
