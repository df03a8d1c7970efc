#!/usr/bin/env python3
"""An SRTP/SRTCP implementation written from RFC 3711 and RFC 7714, independent of libsrtp.

The libsrtp 3 adapter (worker-build/shims/libsrtp3) is checked against it by
tests/srtp_adapter.rs. Only AES and HMAC-SHA1 come from libraries (AES-ECB and AES-GCM from
the `cryptography` package, HMAC-SHA1 from the standard library); everything SRTP-specific is
here: the key derivation, the IV/nonce layout, the rollover counter, the SRTCP index and E flag,
the tags, and where each field sits in the packet. Before it is trusted, `selftest` proves
each part against the RFCs' own vectors.

Commands:
  selftest KAT_FILE      RFC vectors, then every packet in KAT_FILE (the C test's known answers)
                         must be what this implementation produces, byte for byte.
  script SEED OUT        a script for `adapter_test interop`: per suite, packets this side
                         protected for the adapter to unprotect (with the outcome the adapter
                         must report), and plaintexts for the adapter to protect.
  verify SCRIPT ANSWERS  unprotect every packet the adapter protected (ANSWERS, written by
                         `adapter_test interop`) and require the exact bytes this side produces.

Scope: no MKI, key derivation rate 0 (what mediasoup uses); SRTCP packets protected here set
the E flag unless a script line says otherwise.
"""

import hashlib
import hmac
import random
import struct
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# Parameters per suite: RFC 5764 section 4.1.2 (AES_CM_128_HMAC_SHA1_80/_32: 128-bit master key,
# 112-bit master salt, 160-bit HMAC key, SRTCP always with an 80-bit tag) and RFC 7714
# sections 12 and 14.2 (AEAD_AES_128/256_GCM: 128/256-bit key, 96-bit salt, 16-octet tag).
SUITES = {
    "AES_CM_128_HMAC_SHA1_80": dict(aead=False, key=16, salt=14, rtp_tag=10, rtcp_tag=10),
    "AES_CM_128_HMAC_SHA1_32": dict(aead=False, key=16, salt=14, rtp_tag=4, rtcp_tag=10),
    "AEAD_AES_128_GCM": dict(aead=True, key=16, salt=12, rtp_tag=16, rtcp_tag=16),
    "AEAD_AES_256_GCM": dict(aead=True, key=32, salt=12, rtp_tag=16, rtcp_tag=16),
}

# RFC 3711 section 4.3.2 labels (4.3.3 for the PRF itself).
LABEL_RTP_ENC, LABEL_RTP_AUTH, LABEL_RTP_SALT = 0x00, 0x01, 0x02
LABEL_RTCP_ENC, LABEL_RTCP_AUTH, LABEL_RTCP_SALT = 0x03, 0x04, 0x05


class AuthFail(Exception):
    pass


def h(s):
    return bytes.fromhex("".join(s.split()))


def aes_ecb(key, block):
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def aes_cm_keystream(key, iv, length):
    """RFC 3711 section 4.1.1: AES in counter mode, the 128-bit IV incremented per block
    (the low 16 bits are the block counter)."""
    start = int.from_bytes(iv, "big")
    blocks = (length + 15) // 16
    counters = b"".join(((start + j) % (1 << 128)).to_bytes(16, "big") for j in range(blocks))
    return aes_ecb(key, counters)[:length]


def xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


def kdf(master_key, master_salt, label, length):
    """RFC 3711 section 4.3.1/4.3.3 with key_derivation_rate 0: x = label || 0^48 XOR master
    salt (both 112 bits), AES-CM keystream from IV x * 2^16 under the master key. The AES key
    size is the master key's (RFC 6188 section 7 for 256). A 96-bit GCM master salt (RFC 7714)
    takes the leftmost 96 of the 112 bits, zero-padded on the right, as libsrtp and other
    implementations do; `selftest` pins that with libsrtp's published GCM packet."""
    salt = master_salt + bytes(14 - len(master_salt))
    x = bytearray(salt)
    x[7] ^= label
    return aes_cm_keystream(master_key, bytes(x) + b"\x00\x00", length)


class SessionKeys:
    def __init__(self, suite, master_key, master_salt):
        p = SUITES[suite]
        if len(master_key) != p["key"] or len(master_salt) != p["salt"]:
            raise ValueError("bad key/salt length for " + suite)
        self.suite, self.p = suite, p
        k, s = master_key, master_salt
        self.rtp_enc = kdf(k, s, LABEL_RTP_ENC, p["key"])
        self.rtp_salt = kdf(k, s, LABEL_RTP_SALT, p["salt"])
        self.rtcp_enc = kdf(k, s, LABEL_RTCP_ENC, p["key"])
        self.rtcp_salt = kdf(k, s, LABEL_RTCP_SALT, p["salt"])
        if not p["aead"]:
            self.rtp_auth = kdf(k, s, LABEL_RTP_AUTH, 20)
            self.rtcp_auth = kdf(k, s, LABEL_RTCP_AUTH, 20)


def rtp_header_len(pkt):
    """RFC 3550 section 5.1/5.3.1: fixed header, CSRC list, header extension."""
    if len(pkt) < 12 or pkt[0] >> 6 != 2:
        raise ValueError("not an RTP packet")
    n = 12 + 4 * (pkt[0] & 0x0F)
    if pkt[0] & 0x10:
        n += 4 + 4 * struct.unpack_from("!H", pkt, n + 2)[0]
    if n > len(pkt):
        raise ValueError("RTP header longer than the packet")
    return n


def aes_cm_iv(session_salt, ssrc, index):
    """RFC 3711 section 4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)."""
    v = int.from_bytes(session_salt, "big") << 16
    v ^= ssrc << 64
    v ^= index << 16
    return v.to_bytes(16, "big")


def gcm_rtp_iv(session_salt, ssrc, roc, seq):
    """RFC 7714 section 8.1: 00 00 || SSRC || ROC || SEQ, XOR the 96-bit session salt."""
    return xor(b"\x00\x00" + struct.pack("!IIH", ssrc, roc, seq), session_salt)


def gcm_rtcp_iv(session_salt, ssrc, index):
    """RFC 7714 section 9.1: 00 00 || SSRC || 00 00 || 0 || SRTCP index (31 bits), XOR salt."""
    return xor(b"\x00\x00" + struct.pack("!IHI", ssrc, 0, index & 0x7FFFFFFF), session_salt)


def protect_rtp(keys, pkt, roc):
    hl = rtp_header_len(pkt)
    seq, ssrc = struct.unpack_from("!H", pkt, 2)[0], struct.unpack_from("!I", pkt, 8)[0]
    hdr, payload = pkt[:hl], pkt[hl:]
    if keys.p["aead"]:
        # RFC 7714 section 8.2: AAD = the header (CSRCs and extension included).
        iv = gcm_rtp_iv(keys.rtp_salt, ssrc, roc, seq)
        return hdr + AESGCM(keys.rtp_enc).encrypt(iv, payload, hdr)
    index = (roc << 16) | seq
    enc = xor(payload, aes_cm_keystream(keys.rtp_enc, aes_cm_iv(keys.rtp_salt, ssrc, index), len(payload)))
    # RFC 3711 section 4.2: the tag is over the authenticated portion || ROC.
    tag = hmac.new(keys.rtp_auth, hdr + enc + struct.pack("!I", roc), hashlib.sha1).digest()
    return hdr + enc + tag[: keys.p["rtp_tag"]]


def unprotect_rtp(keys, spkt, roc):
    tl = keys.p["rtp_tag"]
    if len(spkt) < 12 + tl:
        raise AuthFail("too short")
    body = spkt[:-tl]
    hl = rtp_header_len(body)
    seq, ssrc = struct.unpack_from("!H", spkt, 2)[0], struct.unpack_from("!I", spkt, 8)[0]
    hdr = spkt[:hl]
    if keys.p["aead"]:
        iv = gcm_rtp_iv(keys.rtp_salt, ssrc, roc, seq)
        try:
            return hdr + AESGCM(keys.rtp_enc).decrypt(iv, spkt[hl:], hdr)
        except Exception:
            raise AuthFail("GCM tag")
    tag = hmac.new(keys.rtp_auth, body + struct.pack("!I", roc), hashlib.sha1).digest()[:tl]
    if not hmac.compare_digest(tag, spkt[-tl:]):
        raise AuthFail("HMAC tag")
    index = (roc << 16) | seq
    enc = body[hl:]
    return hdr + xor(enc, aes_cm_keystream(keys.rtp_enc, aes_cm_iv(keys.rtp_salt, ssrc, index), len(enc)))


def protect_rtcp(keys, pkt, index, encrypt=True):
    """SRTCP: RFC 3711 section 3.4 (AES-CM: header(8) || encrypted || E|index || tag) and
    RFC 7714 section 9 (GCM: header(8) || ciphertext || tag || E|index)."""
    ssrc = struct.unpack_from("!I", pkt, 4)[0]
    eword = struct.pack("!I", (0x80000000 if encrypt else 0) | (index & 0x7FFFFFFF))
    hdr, body = pkt[:8], pkt[8:]
    if keys.p["aead"]:
        iv = gcm_rtcp_iv(keys.rtcp_salt, ssrc, index)
        g = AESGCM(keys.rtcp_enc)
        if encrypt:  # RFC 7714 section 9.2: AAD = header || E|index
            return hdr + g.encrypt(iv, body, hdr + eword) + eword
        # section 9.3: not encrypted: AAD = the whole packet || E|index, empty plaintext
        return pkt + g.encrypt(iv, b"", pkt + eword) + eword
    if encrypt:
        ks = aes_cm_keystream(keys.rtcp_enc, aes_cm_iv(keys.rtcp_salt, ssrc, index), len(body))
        body = xor(body, ks)
    auth = hdr + body + eword
    tag = hmac.new(keys.rtcp_auth, auth, hashlib.sha1).digest()[: keys.p["rtcp_tag"]]
    return auth + tag


def unprotect_rtcp(keys, spkt):
    """Returns (plaintext, index, encrypted?)."""
    tl = keys.p["rtcp_tag"]
    if len(spkt) < 8 + 4 + tl:
        raise AuthFail("too short")
    ssrc = struct.unpack_from("!I", spkt, 4)[0]
    if keys.p["aead"]:
        eword = spkt[-4:]
        e = struct.unpack("!I", eword)[0]
        index, encrypted = e & 0x7FFFFFFF, bool(e >> 31)
        iv = gcm_rtcp_iv(keys.rtcp_salt, ssrc, index)
        g = AESGCM(keys.rtcp_enc)
        try:
            if encrypted:
                return spkt[:8] + g.decrypt(iv, spkt[8:-4], spkt[:8] + eword), index, True
            g.decrypt(iv, spkt[-4 - tl : -4], spkt[: -4 - tl] + eword)
            return spkt[: -4 - tl], index, False
        except Exception:
            raise AuthFail("GCM tag")
    auth, tag = spkt[:-tl], spkt[-tl:]
    if not hmac.compare_digest(hmac.new(keys.rtcp_auth, auth, hashlib.sha1).digest()[:tl], tag):
        raise AuthFail("HMAC tag")
    e = struct.unpack("!I", auth[-4:])[0]
    index, encrypted = e & 0x7FFFFFFF, bool(e >> 31)
    body = auth[8:-4]
    if encrypted:
        body = xor(body, aes_cm_keystream(keys.rtcp_enc, aes_cm_iv(keys.rtcp_salt, ssrc, index), len(body)))
    return auth[:8] + body, index, encrypted


class RtpReceiver:
    """Per-SSRC rollover counter inference, RFC 3711 section 3.3.1 and appendix A; the first
    packet sets s_l with ROC 0. Replay list of `window` packets (section 3.3.2)."""

    def __init__(self, keys, window=1024):
        self.keys, self.window, self.state = keys, window, {}

    def unprotect(self, spkt):
        ssrc = struct.unpack_from("!I", spkt, 8)[0]
        seq = struct.unpack_from("!H", spkt, 2)[0]
        st = self.state.get(ssrc)
        if st is None:
            v = 0
        else:
            roc, s_l = st["roc"], st["s_l"]
            if s_l < 32768:
                v = roc - 1 if seq - s_l > 32768 else roc
            else:
                v = roc + 1 if s_l - 32768 > seq else roc
            v %= 1 << 32
            index, highest = (v << 16) | seq, (roc << 16) | s_l
            if index <= highest:
                if highest - index >= self.window:
                    raise ValueError("too old")
                if index in st["seen"]:
                    raise ValueError("replay")
        plain = unprotect_rtp(self.keys, spkt, v)
        index = (v << 16) | seq
        if st is None:
            self.state[ssrc] = dict(roc=v, s_l=seq, seen={index})
        else:
            if index > (st["roc"] << 16) | st["s_l"]:
                st["roc"], st["s_l"] = v, seq
            st["seen"].add(index)
        return plain, v


# ----------------------------------------------------------------------------- selftest


def selftest_rfc():
    """Each part of this implementation against published vectors."""
    checks = 0

    def eq(what, got, want):
        nonlocal checks
        checks += 1
        if got != want:
            raise SystemExit("selftest FAILED: %s\n  got  %s\n  want %s" % (what, got.hex(), want.hex()))

    # RFC 3711 appendix B.2: AES-CM keystream, session key and salt given, SSRC/ROC/SEQ 0.
    k, salt = h("2B7E151628AED2A6ABF7158809CF4F3C"), h("F0F1F2F3F4F5F6F7F8F9FAFBFCFD")
    iv = aes_cm_iv(salt, 0, 0)
    eq("RFC 3711 B.2 IV", iv, h("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"))
    ks = aes_cm_keystream(k, iv, 0xFF02 * 16)
    eq("RFC 3711 B.2 keystream blocks 0-2", ks[:48], h(
        "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB"
        "41E95B3BB0A2E8DD477901E4FCA894C0"))
    eq("RFC 3711 B.2 keystream blocks FEFF-FF01", ks[0xFEFF * 16:], h(
        "EC8CDF7398607CB0F2D21675EA9EA1E4 362B7C3C6773516318A077D7FC5073AE"
        "6A2CC3787889374FBEB4C81B17BA6C44"))

    # RFC 3711 appendix B.3: key derivation (AES-128 PRF).
    mk, ms = h("E1F97A0D3E018BE0D64FA32C06DE4139"), h("0EC675AD498AFEEBB6960B3AABE6")
    eq("RFC 3711 B.3 cipher key", kdf(mk, ms, 0, 16), h("C61E7A93744F39EE10734AFE3FF7A087"))
    eq("RFC 3711 B.3 cipher salt", kdf(mk, ms, 2, 14), h("30CBBC08863D8C85D49DB34A9AE1"))
    eq("RFC 3711 B.3 auth key (94 octets)", kdf(mk, ms, 1, 94), h(
        "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE"
        "E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25"
        "6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2"))

    # RFC 6188 section 7.2: AES_256_CM_PRF key derivation (the PRF AEAD_AES_256_GCM uses).
    mk, ms = h("f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6"), h("3b04803de51ee7c96423ab5b78d2")
    eq("RFC 6188 7.2 cipher key", kdf(mk, ms, 0, 32), h("5ba1064e30ec51613cad926c5a28ef731ec7fb397f70a960653caf06554cd8c4"))
    eq("RFC 6188 7.2 cipher salt", kdf(mk, ms, 2, 14), h("fa31791685ca444a9e07c6c64e93"))
    eq("RFC 6188 7.2 auth key", kdf(mk, ms, 1, 20), h("fd9c32d39ed5fbb5a9dc96b30818454d1313dc05"))

    # RFC 7714 sections 16 (SRTP) and 17 (SRTCP): these vectors give the session key and
    # salt directly ("Quid pro quo"), so they check the packet layer: IV, AAD, tag placement,
    # the E|index word. The RTCP packet is the one sections 17.1-17.4 encrypt (the section 17
    # preamble prints a slightly different one).
    class K:  # session keys given, no derivation
        pass

    for suite, key, srtp, srtcp in [
        ("AEAD_AES_128_GCM", "000102030405060708090a0b0c0d0e0f",
         # 16.1.1
         "8040f17b8041f8d35501a0b2 f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833"
         "899d7f27beb16a9152cf765ee4390cce",
         # 17.1
         "81c8000d4d617273 63e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1730d6fda4ce09b4686303ded0bb9275b"
         "c84aa45896cf4d2fc5abf87245d9eade 800005d4"),
        ("AEAD_AES_256_GCM", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
         # 16.2.1
         "8040f17b8041f8d35501a0b2 32b1de78a822fe12ef9f78fa332e33aab18012389a58e2f3b50b2a0276ffae0f1ba63799b87b7aa3db36"
         "dfffd6b0f9bb7878d7a76c13",
         # 17.2
         "81c8000d4d617273 d50ae4d1f5ce5d304ba297e47d470c282c3ece5dbffe0a50a2eaa5c1110555be8415f658c61de0476f1b6fad"
         "1d1eb30c4446839f57ff6f6cb26ac3be 800005d4"),
    ]:
        keys = K()
        keys.p = SUITES[suite]
        keys.rtp_enc = keys.rtcp_enc = h(key)
        keys.rtp_salt = keys.rtcp_salt = h("517569642070726f2071756f")
        rtp = h("8040f17b8041f8d35501a0b2 47616c6c696120657374206f6d6e69732064697669736120696e207061727465732074726573")
        rtcp = h("81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61 deadbeefdeadbeefdeadbeefdeadbeefdeadbeef")
        eq("RFC 7714 16 IV", gcm_rtp_iv(keys.rtp_salt, 0x5501A0B2, 0, 0xF17B), h("51753c6580c2726f20718414"))
        eq("RFC 7714 17 IV", gcm_rtcp_iv(keys.rtcp_salt, 0x4D617273, 0x5D4), h("517524055203726f207170bb"))
        eq("RFC 7714 16 %s protect" % suite, protect_rtp(keys, rtp, 0), h(srtp))
        eq("RFC 7714 16 %s unprotect" % suite, unprotect_rtp(keys, h(srtp), 0), rtp)
        eq("RFC 7714 17 %s protect" % suite, protect_rtcp(keys, rtcp, 0x5D4), h(srtcp))
        eq("RFC 7714 17 %s unprotect" % suite, unprotect_rtcp(keys, h(srtcp))[0], rtcp)
        if suite == "AEAD_AES_128_GCM":  # 17.3: tagged, not encrypted (E = 0)
            t = h("81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61deadbeefdeadbeefdeadbeefdeadbeefdeadbeef"
                  "841dd9683dd78ec92ae58790125f62b3 000005d4")
            eq("RFC 7714 17.3 protect (E=0)", protect_rtcp(keys, rtcp, 0x5D4, encrypt=False), t)
            eq("RFC 7714 17.3 unprotect (E=0)", unprotect_rtcp(keys, t)[0], rtcp)
    return checks


def read_kat(path):
    """The C test's known-answer file: `session NAME SUITE KEY SALT` then `rtp|rtcp PLAIN
    PROTECTED` lines, protected in order by one sender."""
    sessions, cur = [], None
    for raw in open(path):
        line = raw.split("#", 1)[0].split()
        if not line:
            continue
        if line[0] == "session":
            cur = dict(name=line[1], suite=line[2], key=h(line[3]), salt=h(line[4]), packets=[])
            sessions.append(cur)
        else:
            cur["packets"].append((line[0], h(line[1]), h(line[2])))
    return sessions


def selftest_kat(path):
    """Every known answer of the C test is what this implementation computes from the RFC
    definitions: RTP with the ROC the sender has reached, SRTCP with libsrtp's index sequence
    (the first SRTCP packet of a stream carries index 1, then +1 per packet, per SSRC)."""
    n = 0
    for s in read_kat(path):
        keys = SessionKeys(s["suite"], s["key"], s["salt"])
        last_seq, roc, rtcp_index = {}, {}, {}
        for kind, plain, prot in s["packets"]:
            if kind == "rtp":
                ssrc, seq = struct.unpack_from("!I", plain, 8)[0], struct.unpack_from("!H", plain, 2)[0]
                if ssrc in last_seq and seq < last_seq[ssrc] and last_seq[ssrc] - seq > 32768:
                    roc[ssrc] = roc.get(ssrc, 0) + 1
                last_seq[ssrc] = seq
                got = protect_rtp(keys, plain, roc.get(ssrc, 0))
            else:
                ssrc = struct.unpack_from("!I", plain, 4)[0]
                rtcp_index[ssrc] = rtcp_index.get(ssrc, 0) + 1
                got = protect_rtcp(keys, plain, rtcp_index[ssrc])
            if got != prot:
                raise SystemExit("selftest FAILED: KAT %s (%s %s)\n  reference %s\n  file      %s"
                                 % (s["name"], s["suite"], kind, got.hex(), prot.hex()))
            n += 1
    return n


# ----------------------------------------------------------------------------- interop


def rtp_packet(rng, ssrc, seq, payload_len, csrcs=0, ext_words=None, marker=False, pt=111):
    b0 = 0x80 | csrcs
    if ext_words is not None:
        b0 |= 0x10
    hdr = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq, rng.getrandbits(32), ssrc)
    for _ in range(csrcs):
        hdr += struct.pack("!I", rng.getrandbits(32))
    if ext_words is not None:  # RFC 8285 one-byte header extension block
        hdr += struct.pack("!HH", 0xBEDE, ext_words) + rng.randbytes(4 * ext_words)
    return hdr + rng.randbytes(payload_len)


def rtcp_packet(rng, ssrc, kind):
    if kind == "sr":  # RFC 3550 6.4.1, one report block
        body = struct.pack("!I", ssrc) + rng.randbytes(20) + rng.randbytes(24)
        return struct.pack("!BBH", 0x81, 200, len(body) // 4) + body
    if kind == "rr":
        body = struct.pack("!I", ssrc) + rng.randbytes(24)
        return struct.pack("!BBH", 0x81, 201, len(body) // 4) + body
    # compound RR + SDES CNAME, as browsers send
    rr = struct.pack("!BBHI", 0x80, 201, 1, ssrc)
    cname = b"interop@srtp"
    item = struct.pack("!BB", 1, len(cname)) + cname + b"\x00\x00"
    chunk = struct.pack("!I", ssrc) + item
    chunk += bytes(-len(chunk) % 4)
    return rr + struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk


def script(seed, out_path):
    rng = random.Random(seed)
    lines = ["# generated by srtp_reference.py script %d" % seed]
    for suite, p in SUITES.items():
        key, salt = rng.randbytes(p["key"]), rng.randbytes(p["salt"])
        keys = SessionKeys(suite, key, salt)
        lines.append("S %s %s %s" % (suite, key.hex(), salt.hex()))

        # -- the adapter protects (P = RTP, Q = RTCP); `verify` checks the answers.
        a, b = 0x11110000 | rng.getrandbits(16), 0x22220000 | rng.getrandbits(16)
        sizes = [0, 1, 15, 16, 17, 160, 1200] + [rng.randrange(0, 400) for _ in range(9)]
        for i in range(16):  # SSRC a crosses 65535 -> 0 (the adapter must raise its ROC)
            lines.append("P " + rtp_packet(rng, a, (65528 + i) % 65536, sizes[i], marker=i == 3).hex())
            if i % 2 == 0:  # SSRC b interleaved, with CSRCs and header extensions
                lines.append("P " + rtp_packet(rng, b, 1000 + i, rng.randrange(0, 300),
                                               csrcs=i % 4, ext_words=(i % 3) or None).hex())
        for i in range(6):
            lines.append("Q " + rtcp_packet(rng, a, ["sr", "rr", "compound"][i % 3]).hex())
            if i % 2:
                lines.append("Q " + rtcp_packet(rng, b, "rr").hex())

        # -- this side protects, the adapter unprotects: U = RTP, V = RTCP, each with the
        #    plaintext the adapter must return or !status it must fail with.
        c = 0x33330000 | rng.getrandbits(16)
        pkts = {}

        def rtp(roc, seq, size=None):
            plain = rtp_packet(rng, c, seq, rng.randrange(1, 200) if size is None else size,
                               csrcs=seq % 2, ext_words=1 if seq % 3 == 0 else None)
            pkts[(roc, seq)] = (plain, protect_rtp(keys, plain, roc))
            return pkts[(roc, seq)]

        def u(roc, seq, expect=None, tamper=False):
            plain, prot = pkts[(roc, seq)] if (roc, seq) in pkts else rtp(roc, seq)
            if tamper:
                prot = bytearray(prot)
                prot[-1] ^= 0x01
                prot = bytes(prot)
            lines.append("U %s %s" % (prot.hex(), expect or plain.hex()))

        for s in (65530, 65531, 65532):
            u(0, s)
        u(0, 65534)          # a gap
        u(1, 0)              # crosses the wrap: the receiver must infer ROC 1
        u(0, 65533)          # late, from before the wrap: ROC 0 again, within the window
        u(0, 65535)          # late as well
        u(1, 1); u(1, 2)
        u(1, 0, "!replay_fail")       # replays, on both sides of the wrap
        u(0, 65534, "!replay_fail")
        u(1, 3, "!auth_fail", tamper=True)  # a forged packet must not take the index ...
        u(1, 3)                              # ... so the genuine one is accepted after it
        top = 3 + 1500
        u(1, top)                        # jump ahead, past the window
        u(1, top - 1023)                 # oldest index the 1024-packet window accepts
        u(1, top - 1024, "!replay_old")  # one older: refused as too old
        u(1, 2, "!replay_old")           # far older
        u(1, top - 1023, "!replay_fail") # the accepted old one, replayed
        wrong = rtp(0, top + 1)          # protected with ROC 0 while the stream is at ROC 1:
        lines.append("U %s !auth_fail" % wrong[1].hex())  # index is authenticated
        u(1, top + 1)

        def v(pkt_index, expect=None, tamper=None, encrypt=True, ssrc=c):
            plain = rtcp_packet(rng, ssrc, ["sr", "rr", "compound"][pkt_index % 3])
            prot = bytearray(protect_rtcp(keys, plain, pkt_index, encrypt))
            if tamper == "payload":
                prot[9] ^= 0x20
            elif tamper == "index":  # the index word is authenticated (and in the GCM AAD)
                pos = len(prot) - 4 if p["aead"] else len(prot) - p["rtcp_tag"] - 4
                prot[pos + 3] ^= 0x01
            elif tamper == "e-flag":  # clearing E on an encrypted packet
                pos = len(prot) - 4 if p["aead"] else len(prot) - p["rtcp_tag"] - 4
                prot[pos] &= 0x7F
            lines.append("V %s %s" % (bytes(prot).hex(), expect or plain.hex()))

        for i in (1, 2, 3, 5):
            v(i)
        v(4)                           # out of order, within the window
        v(3, "!replay_fail")           # replay
        v(6, "!auth_fail", tamper="payload")
        v(6, "!auth_fail", tamper="index")
        # E cleared on an encrypted packet, and a genuine E = 0 packet: libsrtp's AES-CM path
        # refuses unencrypted SRTCP when its policy encrypts (cant_check, before the tag); its
        # AEAD path reads E = 0 as RFC 7714 9.3 allows, so there the forgery fails its tag.
        v(6, "!auth_fail" if p["aead"] else "!cant_check", tamper="e-flag")
        v(6)                           # the genuine one after the forgeries
        v(300)                         # jump ahead; the SRTCP window is 128 wide
        v(300 - 127)                   # oldest accepted
        v(300 - 128, "!replay_old")    # too old
        v(301, None if p["aead"] else "!cant_check", encrypt=False)  # E = 0: authenticated only
        v(1, ssrc=c ^ 1)               # another SSRC has its own index space
    with open(out_path, "w") as f:
        f.write("\n".join(lines) + "\n")


def verify(script_path, answers_path):
    """The adapter's answers to P/Q lines: `P PLAIN PROTECTED` (and Q), in sending order."""
    streams, cur = [], None
    for raw in open(answers_path):
        f = raw.split()
        if not f:
            continue
        if f[0] == "S":
            cur = dict(suite=f[1], key=h(f[2]), salt=h(f[3]), lines=[])
            streams.append(cur)
        elif f[0] in ("P", "Q"):
            cur["lines"].append((f[0], h(f[1]), h(f[2])))
    wanted, cur_suite = {}, None
    for raw in open(script_path):
        f = raw.split()
        if f and f[0] in ("P", "Q"):
            wanted.setdefault(cur_suite, []).append((f[0], h(f[1])))
        elif f and f[0] == "S":
            cur_suite = f[1]
    if sorted(s["suite"] for s in streams) != sorted(wanted):
        raise SystemExit("verify FAILED: suites answered %s, asked %s" % ([s["suite"] for s in streams], list(wanted)))
    counts = {}
    for s in streams:
        suite = s["suite"]
        if [(k, pl) for k, pl, _ in s["lines"]] != wanted[suite]:
            raise SystemExit("verify FAILED: %s: the answers are not the asked packets in order" % suite)
        keys = SessionKeys(suite, s["key"], s["salt"])
        rx, rtcp_next, rocs = RtpReceiver(keys), {}, {}
        for n, (kind, plain, prot) in enumerate(s["lines"]):
            where = "%s line %d (%s)" % (suite, n, kind)
            try:
                if kind == "P":
                    got, roc = rx.unprotect(prot)
                    again = protect_rtp(keys, plain, roc)
                    rocs.setdefault(struct.unpack_from("!I", plain, 8)[0], set()).add(roc)
                else:
                    got, index, encrypted = unprotect_rtcp(keys, prot)
                    if not encrypted:
                        raise SystemExit("verify FAILED: %s: SRTCP sent without encryption" % where)
                    ssrc = struct.unpack_from("!I", plain, 4)[0]
                    if ssrc in rtcp_next and index != rtcp_next[ssrc]:
                        raise SystemExit("verify FAILED: %s: SRTCP index %d, expected %d"
                                         % (where, index, rtcp_next[ssrc]))
                    rtcp_next[ssrc] = index + 1
                    again = protect_rtcp(keys, plain, index)
            except AuthFail as e:
                raise SystemExit("verify FAILED: %s: the reference cannot authenticate the adapter's "
                                 "packet (%s)\n  %s" % (where, e, prot.hex()))
            except ValueError as e:
                raise SystemExit("verify FAILED: %s: %s" % (where, e))
            if got != plain:
                raise SystemExit("verify FAILED: %s: decrypts to\n  %s\nnot\n  %s" % (where, got.hex(), plain.hex()))
            if again != prot:
                raise SystemExit("verify FAILED: %s: adapter wrote\n  %s\nreference\n  %s" % (where, prot.hex(), again.hex()))
            counts[kind] = counts.get(kind, 0) + 1
        if not any(r == {0, 1} for r in rocs.values()):
            raise SystemExit("verify FAILED: %s: no SSRC crossed the sequence wrap" % suite)
        print("  %s: the reference unprotected and reproduced %d SRTP and %d SRTCP packets "
              "of the adapter (ROC 0 -> 1 crossed)" % (suite, sum(k == "P" for k, _, _ in s["lines"]),
                                                        sum(k == "Q" for k, _, _ in s["lines"])))
    return counts


def main(argv):
    if len(argv) >= 2 and argv[1] == "selftest" and len(argv) == 3:
        n = selftest_rfc()
        k = selftest_kat(argv[2])
        print("reference selftest: %d RFC 3711/6188/7714 vector checks, %d known-answer packets reproduced" % (n, k))
    elif len(argv) == 4 and argv[1] == "script":
        script(int(argv[2]), argv[3])
    elif len(argv) == 4 and argv[1] == "verify":
        c = verify(argv[2], argv[3])
        print("reference verify: %d SRTP + %d SRTCP packets from the adapter, all exact" % (c.get("P", 0), c.get("Q", 0)))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
