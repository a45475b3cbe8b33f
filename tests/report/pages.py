"""Reading report pages and screenshots in the tests: the SVG figures as
XML, the counts a page states, what it would fetch, and a small PNG decoder
(zlib and the five scanline filters; no imaging library)."""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
import zlib

SVG_NS = "{http://www.w3.org/2000/svg}"


def svgs(html: str) -> list[ET.Element]:
    """Every inline <svg> of the page, parsed as XML (raises if one is not)."""
    return [ET.fromstring(m) for m in re.findall(r"<svg\b.*?</svg>", html, re.S)]


def by_class(html: str, cls: str) -> list[ET.Element]:
    return [s for s in svgs(html) if cls in s.get("class", "").split()]


def arrows(ladder: ET.Element) -> list[ET.Element]:
    """The packet arrows of a ladder diagram (one <g class="pkt ..."> each)."""
    return [g for g in ladder.iter(SVG_NS + "g") if "pkt" in g.get("class", "").split()]


def connections(html: str) -> list[dict[str, int]]:
    """The data-* numbers of each connection section, in page order."""
    out = []
    for m in re.finditer(r'<section class="conn" id="c(\d+)"([^>]*)>', html):
        nums = dict(re.findall(r'data-(\w+)="(\d+)"', m.group(2)))
        out.append({"number": int(m.group(1)), **{k: int(v) for k, v in nums.items()}})
    return out


def card(html: str, what: str) -> str:
    """The value of a summary card ("packets", "retransmissions", ...)."""
    m = re.search(r'<div class="card[^"]*"><b>([^<]*)</b><span>' + re.escape(what) + "</span>",
                  html)
    assert m, f"no card {what!r} on the page"
    return m.group(1)


def remote_fetches(html: str) -> list[str]:
    """Everything in the page that would make a browser fetch something."""
    found = re.findall(r"""\b(?:src|href|srcset|action|poster|data)\s*=\s*["']?\s*"""
                       r"""(?:https?:|//|ftp:|file:)[^"'\s>]*""", html, re.I)
    found += re.findall(r"@import[^;]*", html, re.I)
    found += [u for u in re.findall(r"url\(([^)]*)\)", html, re.I)
              if not u.strip("'\" ").startswith("#")]
    found += re.findall(r"<(?:script|link|img|iframe|object|embed|audio|video)\b[^>]*"
                        r"(?:src|href)=[^>]*>", html, re.I)
    return found


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, bytes per pixel, pixel bytes) of an 8-bit RGB/RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    off, idat = 8, []
    width = height = bpp = 0
    while off < len(data):
        length, kind = struct.unpack_from(">I4s", data, off)
        body = data[off + 8 : off + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack_from(">IIBB", body)
            assert depth == 8 and colour in (0, 2, 4, 6), (depth, colour)
            bpp = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
        elif kind == b"IDAT":
            idat.append(body)
        off += 12 + length
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif ftype == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif ftype == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line
        prev = line
    return width, height, bpp, bytes(out)


def colour_census(png: bytes) -> tuple[int, int, int]:
    """(pixels, pixels not white, distinct colours) of a PNG."""
    width, height, bpp, pixels = decode_png(png)
    step = bpp
    colours: set[bytes] = set()
    not_white = 0
    for i in range(0, len(pixels), step):
        px = pixels[i : i + min(3, bpp)]
        colours.add(px)
        if px != b"\xff" * len(px):
            not_white += 1
    return width * height, not_white, len(colours)
