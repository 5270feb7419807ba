"""The pure-Python reference's reading of Asterisk's channel-shaped fields: the number in
a caller id ('"Pat" <3035550142>'), in a channel name ('PJSIP/1001-0000001b'), and the
lines of a Dial's devices ('SIP/301&SIP/302,20'), as the native parser reads them."""
from __future__ import annotations

from . import numbers


def clid_number(text: bytes, cc: int) -> int:
    i = text.rfind(b"<")
    if i < 0:
        return 0
    j = text.find(b">", i + 1)
    if j < 0:
        return 0
    return numbers.normalize(text[i + 1:j], cc)


def dial_devices(data: bytes) -> bytes:
    """As the native dial_devices_length: a Dial's devices (its arguments up to the first
    ',' or '|') if they are two or more (joined by '&'), else b''."""
    cut = min((k for k in (data.find(b","), data.find(b"|")) if k >= 0), default=len(data))
    return data[:cut] if b"&" in data[:cut] else b""


def dial_members(devices: bytes, cc: int) -> tuple[int, ...]:
    """As the native dial_members: the lines of a Dial's devices, each once, in order,
    Local channels skipped (the dialplan they run writes its own record)."""
    found: list[int] = []
    for device in devices.split(b"&"):
        device = device.lstrip(b" ")
        if device[:6].lower() != b"local/" and (v := channel_number(device, cc)) and v not in found:
            found.append(v)
    return tuple(found)


def channel_number(text: bytes, cc: int) -> int:
    i = text.find(b"/")
    if i < 0:
        return 0
    rest = text[i + 1:]
    cut = len(rest)
    for stop in b"@/;":
        k = rest.find(bytes([stop]))
        if 0 <= k < cut:
            cut = k
    if cut == len(rest) or rest[cut] == 0x3B:  # no '@' or '/': drop the '-suffix'
        dash = rest.rfind(b"-", 1, cut)
        if dash > 0:
            cut = dash
    if cut <= 0:
        return 0
    return numbers.normalize(rest[:cut], cc)
