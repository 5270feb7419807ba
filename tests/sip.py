"""A small SIP user agent over UDP for the tests against a real Kamailio (standard library
only): it registers, places calls and answers them the way each test needs: answer,
ring then be cancelled, busy, decline, no answer, redirect. It speaks only what those
calls need (RFC 3261 over UDP, loose routing through a record-routing proxy)."""
from __future__ import annotations

import dataclasses
import random
import socket
import time
import uuid

TIMEOUT = 5.0
T1 = 0.5                 # RFC 3261's round-trip estimate: a request unanswered is sent again


def _branch() -> str:
    return "z9hG4bK" + uuid.uuid4().hex[:16]


@dataclasses.dataclass
class Message:
    first: str
    headers: list[tuple[str, str]]
    body: str = ""

    @property
    def status(self) -> int | None:
        return int(self.first.split()[1]) if self.first.startswith("SIP/2.0") else None

    @property
    def method(self) -> str | None:
        return None if self.first.startswith("SIP/2.0") else self.first.split()[0]

    def get(self, name: str, default: str = "") -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), default)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def render(self) -> bytes:
        lines = [self.first, *(f"{k}: {v}" for k, v in self.headers
                               if k.lower() != "content-length"),
                 f"Content-Length: {len(self.body.encode())}", "", self.body]
        return "\r\n".join(lines).encode()


def parse(data: bytes) -> Message:
    head, _, body = data.decode("utf-8", "replace").partition("\r\n\r\n")
    first, *rest = head.split("\r\n")
    headers = []
    for line in rest:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return Message(first, headers, body)


class Phone:
    """One line's phone: user@127.0.0.1:port, talking to the proxy at proxy_port."""

    def __init__(self, user: str, proxy_port: int):
        self.user, self.proxy = user, ("127.0.0.1", proxy_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self.cseq = random.randint(1, 1000)
        self.last_reply: Message | None = None     # the final reply of the last call

    def close(self) -> None:
        self.sock.close()

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@127.0.0.1:{self.port}>"

    def send(self, message: Message, to: tuple[str, int] | None = None) -> None:
        self.sock.sendto(message.render(), to or self.proxy)

    def receive(self, timeout: float = TIMEOUT) -> Message:
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(65535)
        return parse(data)

    def _request(self, method: str, uri: str, call_id: str, from_tag: str, to: str,
                 extra: list[tuple[str, str]] = (), cseq: int | None = None,
                 branch: str | None = None) -> Message:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        return Message(f"{method} {uri} SIP/2.0", [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch or _branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{self.user}@127.0.0.1>;tag={from_tag}"),
            ("To", to), ("Call-ID", call_id), ("CSeq", f"{cseq} {method}"),
            ("Contact", self.contact), *extra])

    def register(self) -> None:
        """REGISTER, sent again every T1 (0.5 s) until answered, as UDP asks (RFC 3261)."""
        tag = uuid.uuid4().hex[:8]
        request = self._request("REGISTER", "sip:127.0.0.1", uuid.uuid4().hex, tag,
                                f"<sip:{self.user}@127.0.0.1>", [("Expires", "600")])
        deadline = time.monotonic() + TIMEOUT
        while True:
            self.send(request)
            try:
                reply = self.receive(T1)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
        assert reply.status == 200, reply.first

    # ---------------------------------------------------------------- calling

    def call(self, callee: str, *, hang_up_after: float = 0.2, cancel_after: float | None = None,
             give_up_after: float | None = None, headers: list[tuple[str, str]] = (),
             domain: str = "127.0.0.1") -> int:
        """INVITE callee@domain through the proxy; the final status. Answered calls are hung
        up with BYE; cancel_after: CANCEL once it rang that long; give_up_after: CANCEL that
        long after dialling, rung or not."""
        # as a phone on an IPv6 network writes it: db_text escapes its colons ('\\:')
        call_id, tag = f"{uuid.uuid4().hex}@[2001:db8::57]", uuid.uuid4().hex[:8]
        to = f"<sip:{callee}@{domain}>"
        invite = self._request("INVITE", f"sip:{callee}@{domain}", call_id, tag, to,
                               [*headers, ("Content-Type", "application/sdp")])
        invite.body = ("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                       "t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
        branch = invite.get("Via").split("branch=")[1].split(";")[0]
        self.send(invite)
        rang_at, heard, sent_at = None, False, time.monotonic()
        if give_up_after is not None:              # the clock starts at dialling
            rang_at, cancel_after = sent_at, give_up_after
        while True:
            if not heard and time.monotonic() - sent_at >= T1:   # lost on the way: again
                self.send(invite)
                sent_at = time.monotonic()
            if cancel_after is not None and rang_at is not None \
                    and time.monotonic() - rang_at >= cancel_after:
                cancel = self._request("CANCEL", f"sip:{callee}@{domain}", call_id, tag, to,
                                       cseq=int(invite.get("CSeq").split()[0]), branch=branch)
                self.send(cancel)
                cancel_after = None
            wait = TIMEOUT if heard else T1
            if cancel_after is not None and rang_at is not None:
                wait = max(0.01, cancel_after - (time.monotonic() - rang_at))
            try:
                reply = self.receive(wait)
            except TimeoutError:
                if cancel_after is None and heard:
                    raise
                continue                           # time to cancel, or to send it again
            if reply.method is not None or reply.get("Call-ID") != call_id:
                continue                           # a request to us, or an earlier call's
            heard = True
            if reply.get("CSeq").endswith("CANCEL"):
                continue
            if reply.status in (100, 183):
                continue
            if reply.status == 180:
                rang_at = rang_at or time.monotonic()
                continue
            self.last_reply = reply
            if reply.status >= 300:               # the proxy's transaction wants an ACK
                ack = Message(f"ACK sip:{callee}@{domain} SIP/2.0", [
                    ("Via", invite.get("Via")), ("Max-Forwards", "70"),
                    ("From", invite.get("From")), ("To", reply.get("To")),
                    ("Call-ID", call_id), ("CSeq", f"{invite.get('CSeq').split()[0]} ACK")])
                self.send(ack)
                return reply.status
            # 2xx: ACK and BYE go to the callee's contact through the recorded route
            routes = [r for v in reversed(reply.all("Record-Route")) for r in v.split(",")]
            target = reply.get("Contact").strip("<>").split(">")[0]
            to_tagged = reply.get("To")
            route = [("Route", ", ".join(r.strip() for r in routes))] if routes else []
            ack = self._request("ACK", target, call_id, tag, to_tagged, route,
                                cseq=int(invite.get("CSeq").split()[0]))
            self.send(ack)
            time.sleep(hang_up_after)
            self.send(self._request("BYE", target, call_id, tag, to_tagged, route))
            while self.receive().status is None:
                pass
            return reply.status

    # ---------------------------------------------------------------- answering

    def answer(self, how: str, ring: float = 0.3, redirect_to: str | None = None) -> None:
        """Take one incoming call: 'answer' (180 then 200, then wait for BYE), 'ring'
        (180, then wait for CANCEL), 'busy' (486), 'decline' (180 then 603), 'no-answer'
        (180, then 480 after ring seconds), 'reject' (180, then 486 after ring seconds: a
        phone whose user rejects the ringing call), 'redirect' (302 to redirect_to); and without
        ever ringing: 'silent' (no 180; the caller cancels), 'dnd' (480 at once)."""
        invite = self.receive()
        while invite.method != "INVITE":
            invite = self.receive()
        to = invite.get("To") + f";tag={uuid.uuid4().hex[:8]}"

        def reply(code: int, reason: str, request: Message = invite, extra=()) -> None:
            self.send(Message(f"SIP/2.0 {code} {reason}", [
                *[("Via", v) for v in request.all("Via")],
                *[("Record-Route", v) for v in request.all("Record-Route")],
                ("From", request.get("From")), ("To", to if request is invite else request.get("To")),
                ("Call-ID", request.get("Call-ID")), ("CSeq", request.get("CSeq")),
                ("Contact", self.contact), *extra]))
        if how == "busy":
            reply(486, "Busy Here")
        elif how == "dnd":                         # do not disturb: refused, never rang
            reply(480, "Temporarily Unavailable")
        elif how == "silent":                      # still setting up when the caller gives up
            reply(100, "Trying")                   # (a proxy cancels only a branch that replied)
            while (request := self.receive()).method != "CANCEL":
                pass
            reply(200, "OK", request)
            reply(487, "Request Terminated")
        elif how == "redirect":
            reply(302, "Moved Temporarily", extra=[("Contact", f"<sip:{redirect_to}@127.0.0.1>")])
        else:
            reply(180, "Ringing")
            if how == "decline":
                time.sleep(ring)
                reply(603, "Decline")
            elif how == "reject":
                time.sleep(ring)
                reply(486, "Busy Here")
            elif how == "no-answer":
                time.sleep(ring)
                reply(480, "Temporarily Unavailable")
            elif how == "ring":                    # until the caller cancels
                while True:
                    request = self.receive()
                    if request.method == "CANCEL":
                        reply(200, "OK", request)
                        reply(487, "Request Terminated")
                        break
            else:
                time.sleep(ring)
                reply(200, "OK")
        while True:                               # ACK (and BYE for an answered call)
            try:
                request = self.receive(timeout=3 if how == "answer" else 0.5)
            except TimeoutError:
                return
            if request.method == "BYE":
                reply(200, "OK", request)
                return
