/* Tests of the libsrtp 3 API adapter (worker-build/shims/libsrtp3) that mediasoup's SRTP runs
 * on. Linked against the libmediasoup-worker.a the server is built with, by
 * tests/srtp_adapter.rs.
 *
 *   adapter_test KNOWN_ANSWERS      (1) per suite: RTP and RTCP, in place and out of place,
 *                                   tamper -> auth failure, replay -> replay failure, too-small
 *                                   output, bad key/salt sizes, MKI; (2) the known answers of
 *                                   KNOWN_ANSWERS (known_answers.txt), both directions;
 *                                   (3) per suite: replay window, ROC inference across
 *                                   65535 -> 0, SRTCP index handling.
 *   adapter_test interop SCRIPT OUT interop with srtp_reference.py: protect the P/Q lines of
 *                                   SCRIPT into OUT, unprotect the U/V lines and require the
 *                                   outcome each names.
 * Ends with "N passed, M failed"; exit status 0 only when nothing failed. */
#define _POSIX_C_SOURCE 200809L
#include <srtp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks, failures;
#define CHECK(c) do { checks++; if (!(c)) { printf("  FAIL %s:%d %s\n", __FILE__, __LINE__, #c); failures++; } } while (0)

static srtp_t make(srtp_profile_t prof, srtp_ssrc_type_t dir, const uint8_t* km)
{
	srtp_policy_t p = NULL;
	srtp_t s = NULL;
	srtp_ssrc_t ssrc = { dir, 0 };
	size_t kl = srtp_profile_get_master_key_length(prof), sl = srtp_profile_get_master_salt_length(prof);
	CHECK(srtp_policy_create(&p) == srtp_err_status_ok);
	CHECK(srtp_policy_set_ssrc(p, ssrc) == srtp_err_status_ok);
	CHECK(srtp_policy_set_profile(p, prof) == srtp_err_status_ok);
	CHECK(srtp_policy_add_key(p, km, kl - 1, km + kl, sl, NULL, 0) == srtp_err_status_bad_param);
	CHECK(srtp_policy_add_key(p, km, kl + 1, km + kl, sl, NULL, 0) == srtp_err_status_bad_param);
	CHECK(srtp_policy_add_key(p, km, kl, km + kl, sl - 1, NULL, 0) == srtp_err_status_bad_param);
	CHECK(srtp_policy_add_key(p, km, kl, km + kl, sl + 1, NULL, 0) == srtp_err_status_bad_param);
	CHECK(srtp_policy_add_key(p, NULL, kl, km + kl, sl, NULL, 0) == srtp_err_status_bad_param);
	CHECK(srtp_policy_add_key(p, km, kl, km + kl, sl, km, 4) == srtp_err_status_bad_param); /* MKI */
	CHECK(srtp_policy_add_key(p, km, kl, km + kl, sl, NULL, 0) == srtp_err_status_ok);
	CHECK(srtp_policy_set_allow_repeat_tx(p, true) == srtp_err_status_ok);
	CHECK(srtp_policy_set_window_size(p, 1024) == srtp_err_status_ok);
	CHECK(srtp_create(&s, p) == srtp_err_status_ok);
	srtp_policy_destroy(p); /* session must survive the policy */
	return s;
}

static void run(const char* name, srtp_profile_t prof, size_t tag, size_t rtcp_tag)
{
	uint8_t km[64];
	for (size_t i = 0; i < sizeof km; i++) km[i] = (uint8_t)(i * 13 + 1);
	srtp_t tx = make(prof, ssrc_any_outbound, km), rx = make(prof, ssrc_any_inbound, km);
	uint8_t rtp[172], out[512], back[512];
	memset(rtp, 0, sizeof rtp);
	rtp[0] = 0x80; rtp[1] = 111; rtp[3] = 1; rtp[11] = 0x42;
	for (size_t i = 12; i < sizeof rtp; i++) rtp[i] = (uint8_t)i;

	/* out-of-place protect, capacity exactly too small then enough */
	size_t olen = sizeof rtp + SRTP_MAX_TRAILER_LEN - 1;
	CHECK(srtp_protect(tx, rtp, sizeof rtp, out, &olen, 0) == srtp_err_status_buffer_small);
	olen = sizeof out;
	CHECK(srtp_protect(tx, rtp, sizeof rtp, out, &olen, 0) == srtp_err_status_ok);
	CHECK(olen == sizeof rtp + tag);
	CHECK(memcmp(out, rtp, 12) == 0);                 /* header in clear */
	CHECK(memcmp(out + 12, rtp + 12, sizeof rtp - 12) != 0); /* payload encrypted */
	CHECK(srtp_protect(tx, rtp, sizeof rtp, out, &olen, 1) == srtp_err_status_bad_mki);

	/* out-of-place unprotect, too-small output, then tamper, then good */
	size_t blen = olen - 1;
	CHECK(srtp_unprotect(rx, out, olen, back, &blen) == srtp_err_status_buffer_small);
	out[olen - 1] ^= 1;
	blen = sizeof back;
	CHECK(srtp_unprotect(rx, out, olen, back, &blen) == srtp_err_status_auth_fail);
	out[olen - 1] ^= 1;
	blen = sizeof back;
	CHECK(srtp_unprotect(rx, out, olen, back, &blen) == srtp_err_status_ok);
	CHECK(blen == sizeof rtp && memcmp(back, rtp, sizeof rtp) == 0);
	/* replay of the same packet is rejected */
	blen = sizeof back;
	CHECK(srtp_unprotect(rx, out, olen, back, &blen) == srtp_err_status_replay_fail);

	/* in-place round trip of packet #2 (mediasoup decrypts in place) */
	uint8_t buf[512];
	memcpy(buf, rtp, sizeof rtp); buf[3] = 2;
	size_t len = sizeof buf;
	CHECK(srtp_protect(tx, buf, sizeof rtp, buf, &len, 0) == srtp_err_status_ok);
	size_t l2 = len;
	CHECK(srtp_unprotect(rx, buf, len, buf, &l2) == srtp_err_status_ok);
	CHECK(l2 == sizeof rtp && buf[3] == 2 && memcmp(buf + 12, rtp + 12, sizeof rtp - 12) == 0);

	/* RTCP round trip (SR-like packet) */
	uint8_t rtcp[28] = { 0x80, 200, 0, 6, 0, 0, 0, 0x42 };
	for (size_t i = 8; i < sizeof rtcp; i++) rtcp[i] = (uint8_t)(i * 3);
	size_t clen = sizeof out;
	CHECK(srtp_protect_rtcp(tx, rtcp, sizeof rtcp, out, &clen, 0) == srtp_err_status_ok);
	CHECK(clen == sizeof rtcp + 4 + rtcp_tag);
	size_t rlen = sizeof back;
	CHECK(srtp_unprotect_rtcp(rx, out, clen, back, &rlen) == srtp_err_status_ok);
	CHECK(rlen == sizeof rtcp && memcmp(back, rtcp, sizeof rtcp) == 0);
	/* RTCP replay is rejected */
	rlen = sizeof back;
	CHECK(srtp_unprotect_rtcp(rx, out, clen, back, &rlen) == srtp_err_status_replay_fail);
	/* RTCP tamper -> auth failure */
	size_t tlen = sizeof out;
	CHECK(srtp_protect_rtcp(tx, rtcp, sizeof rtcp, out, &tlen, 0) == srtp_err_status_ok);
	out[9] ^= 0x10; rlen = sizeof back;
	CHECK(srtp_unprotect_rtcp(rx, out, tlen, back, &rlen) == srtp_err_status_auth_fail);
	/* RTCP too-small output buffers, both ways */
	size_t small = sizeof rtcp + 3;
	CHECK(srtp_protect_rtcp(tx, rtcp, sizeof rtcp, out, &small, 0) == srtp_err_status_buffer_small);
	/* RTCP in place (mediasoup protects and unprotects RTCP in place) */
	uint8_t rbuf[256];
	memcpy(rbuf, rtcp, sizeof rtcp); rbuf[7] = 0x43;
	size_t ilen = sizeof rbuf;
	CHECK(srtp_protect_rtcp(tx, rbuf, sizeof rtcp, rbuf, &ilen, 0) == srtp_err_status_ok);
	CHECK(memcmp(rbuf + 8, rtcp + 8, sizeof rtcp - 8) != 0); /* payload encrypted */
	size_t back_small = sizeof rtcp - 1;
	CHECK(srtp_unprotect_rtcp(rx, rbuf, ilen, back, &back_small) == srtp_err_status_buffer_small);
	size_t olen2 = ilen;
	CHECK(srtp_unprotect_rtcp(rx, rbuf, ilen, rbuf, &olen2) == srtp_err_status_ok);
	CHECK(olen2 == sizeof rtcp && rbuf[7] == 0x43 && memcmp(rbuf + 8, rtcp + 8, sizeof rtcp - 8) == 0);
	/* RTCP with an MKI index is refused */
	size_t mlen = sizeof out;
	CHECK(srtp_protect_rtcp(tx, rtcp, sizeof rtcp, out, &mlen, 1) == srtp_err_status_bad_mki);

	CHECK(srtp_dealloc(tx) == srtp_err_status_ok);
	CHECK(srtp_dealloc(rx) == srtp_err_status_ok);
	printf("  %s done\n", name);
}

/* ---- shared by the known answers, the replay/ROC tests and interop ------------------- */

static const struct suite
{
	const char* name;
	srtp_profile_t profile;
	size_t rtp_tag, rtcp_tag;
} suites[] = {
	{ "AES_CM_128_HMAC_SHA1_80", srtp_profile_aes128_cm_sha1_80, 10, 10 },
	{ "AES_CM_128_HMAC_SHA1_32", srtp_profile_aes128_cm_sha1_32, 4, 10 }, /* SRTCP keeps 80 bits */
	{ "AEAD_AES_128_GCM", srtp_profile_aead_aes_128_gcm, 16, 16 },
	{ "AEAD_AES_256_GCM", srtp_profile_aead_aes_256_gcm, 16, 16 },
};
#define NSUITES (sizeof suites / sizeof suites[0])

static const struct suite* suite_by_name(const char* name)
{
	for (size_t i = 0; i < NSUITES; i++)
		if (strcmp(suites[i].name, name) == 0)
			return &suites[i];
	return NULL;
}

static const struct
{
	const char* name;
	srtp_err_status_t code;
} statuses[] = {
	{ "ok", srtp_err_status_ok },
	{ "fail", srtp_err_status_fail },
	{ "bad_param", srtp_err_status_bad_param },
	{ "auth_fail", srtp_err_status_auth_fail },
	{ "cipher_fail", srtp_err_status_cipher_fail },
	{ "cant_check", srtp_err_status_cant_check },
	{ "replay_fail", srtp_err_status_replay_fail },
	{ "replay_old", srtp_err_status_replay_old },
	{ "parse_err", srtp_err_status_parse_err },
	{ "bad_mki", srtp_err_status_bad_mki },
	{ "buffer_small", srtp_err_status_buffer_small },
};

static const char* status_name(srtp_err_status_t e)
{
	static char other[32];
	for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
		if (statuses[i].code == e)
			return statuses[i].name;
	snprintf(other, sizeof other, "status %d", (int)e);
	return other;
}

static int status_by_name(const char* name, srtp_err_status_t* e)
{
	for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
		if (strcmp(statuses[i].name, name) == 0)
		{
			*e = statuses[i].code;
			return 1;
		}
	return 0;
}

/* Hex string -> bytes; returns the length, or (size_t)-1 if malformed or too long. */
static size_t unhex(const char* s, uint8_t* out, size_t cap)
{
	size_t n = strlen(s);
	if (n % 2 || n / 2 > cap)
		return (size_t)-1;
	for (size_t i = 0; i < n / 2; i++)
	{
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return (size_t)-1;
		out[i] = (uint8_t)v;
	}
	return n / 2;
}

static void print_hex(FILE* f, const uint8_t* b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%02x", b[i]);
}

/* One check on a result: status and bytes, with a readable diagnosis when it fails. */
static void check_result(
  const char* what,
  srtp_err_status_t got_status,
  srtp_err_status_t want_status,
  const uint8_t* got,
  size_t got_len,
  const uint8_t* want,
  size_t want_len)
{
	checks++;
	if (got_status == want_status &&
	    (got_status != srtp_err_status_ok || (got_len == want_len && memcmp(got, want, want_len) == 0)))
		return;
	failures++;
	if (got_status == want_status)
		printf("  FAIL %s: other bytes than the expected ones", what);
	else
		printf("  FAIL %s: %s, wanted %s", what, status_name(got_status), status_name(want_status));
	if (got_status == srtp_err_status_ok && want_status == srtp_err_status_ok)
	{
		printf("\n    got  ");
		print_hex(stdout, got, got_len);
		printf("\n    want ");
		print_hex(stdout, want, want_len);
	}
	printf("\n");
}

/* A session configured as mediasoup's SrtpSession does: any inbound/outbound SSRC, repeat
 * transmission allowed, 1024-packet replay window. */
static srtp_t session(
  srtp_profile_t prof, srtp_ssrc_type_t dir, const uint8_t* key, size_t kl, const uint8_t* salt, size_t sl)
{
	srtp_policy_t p = NULL;
	srtp_t s        = NULL;
	srtp_ssrc_t ssrc = { dir, 0 };
	int ok = srtp_policy_create(&p) == srtp_err_status_ok &&
	         srtp_policy_set_ssrc(p, ssrc) == srtp_err_status_ok &&
	         srtp_policy_set_profile(p, prof) == srtp_err_status_ok &&
	         srtp_policy_add_key(p, key, kl, salt, sl, NULL, 0) == srtp_err_status_ok &&
	         srtp_policy_set_allow_repeat_tx(p, true) == srtp_err_status_ok &&
	         srtp_policy_set_window_size(p, 1024) == srtp_err_status_ok &&
	         srtp_create(&s, p) == srtp_err_status_ok;
	srtp_policy_destroy(p);
	CHECK(ok);
	return ok ? s : NULL;
}

/* ---- (2) known answers -------------------------------------------------------------- */

/* known_answers.txt: "session NAME SUITE KEY SALT", then "rtp|rtcp PLAIN PROTECTED" lines.
 * Each plaintext must protect to exactly PROTECTED (one sending session, in file order), and
 * each PROTECTED must unprotect to the plaintext (one receiving session, in file order). */
static void known_answers(const char* path)
{
	FILE* f = fopen(path, "r");
	CHECK(f != NULL);
	if (!f)
	{
		printf("  cannot open %s\n", path);
		return;
	}
	static uint8_t key[64], salt[64], plain[2048], prot[2048], out[4096];
	char* line = NULL;
	size_t cap = 0;
	char name[64] = "";
	srtp_t tx = NULL, rx = NULL;
	const struct suite* su = NULL;
	int packets = 0, per_suite[NSUITES] = { 0 }, lineno = 0;
	while (getline(&line, &cap, f) > 0)
	{
		lineno++;
		char* hash = strchr(line, '#');
		if (hash)
			*hash = 0;
		char* tok[6];
		int nt = 0;
		for (char* t = strtok(line, " \t\r\n"); t && nt < 6; t = strtok(NULL, " \t\r\n"))
			tok[nt++] = t;
		if (nt == 0)
			continue;
		if (strcmp(tok[0], "session") == 0 && nt == 5)
		{
			if (tx)
				srtp_dealloc(tx);
			if (rx)
				srtp_dealloc(rx);
			tx = rx = NULL;
			snprintf(name, sizeof name, "%s", tok[1]);
			su = suite_by_name(tok[2]);
			size_t kl = unhex(tok[3], key, sizeof key), sl = unhex(tok[4], salt, sizeof salt);
			CHECK(su != NULL && kl != (size_t)-1 && sl != (size_t)-1);
			if (!su || kl == (size_t)-1 || sl == (size_t)-1)
				continue;
			tx = session(su->profile, ssrc_any_outbound, key, kl, salt, sl);
			rx = session(su->profile, ssrc_any_inbound, key, kl, salt, sl);
			continue;
		}
		int is_rtp = strcmp(tok[0], "rtp") == 0;
		if (nt != 3 || (!is_rtp && strcmp(tok[0], "rtcp") != 0) || !tx || !rx)
		{
			printf("  FAIL %s:%d: bad line\n", path, lineno);
			checks++, failures++;
			continue;
		}
		size_t pl = unhex(tok[1], plain, sizeof plain), cl = unhex(tok[2], prot, sizeof prot);
		CHECK(pl != (size_t)-1 && cl != (size_t)-1);
		if (pl == (size_t)-1 || cl == (size_t)-1)
			continue;
		char what[160];
		/* protect (out of place, as mediasoup does) must give the known bytes */
		size_t olen = sizeof out;
		srtp_err_status_t e = is_rtp ? srtp_protect(tx, plain, pl, out, &olen, 0)
		                             : srtp_protect_rtcp(tx, plain, pl, out, &olen, 0);
		snprintf(what, sizeof what, "known answer %s (%s) line %d: %s protect", name, su->name, lineno, tok[0]);
		check_result(what, e, srtp_err_status_ok, out, olen, prot, cl);
		/* the known bytes must unprotect (in place, as mediasoup does) to the plaintext */
		memcpy(out, prot, cl);
		size_t blen = cl;
		e = is_rtp ? srtp_unprotect(rx, out, cl, out, &blen) : srtp_unprotect_rtcp(rx, out, cl, out, &blen);
		snprintf(what, sizeof what, "known answer %s (%s) line %d: %s unprotect", name, su->name, lineno, tok[0]);
		check_result(what, e, srtp_err_status_ok, out, blen, plain, pl);
		packets++;
		per_suite[su - suites]++;
	}
	free(line);
	fclose(f);
	if (tx)
		srtp_dealloc(tx);
	if (rx)
		srtp_dealloc(rx);
	for (size_t i = 0; i < NSUITES; i++)
	{
		CHECK(per_suite[i] > 0); /* every suite has known answers */
		printf("  known answers %s done (%d packets, both directions)\n", suites[i].name, per_suite[i]);
	}
}

/* ---- (3) replay window, ROC inference, SRTCP index ----------------------------------- */

struct pkt
{
	uint8_t b[256];
	size_t len;
};

static size_t make_rtp(uint8_t* b, uint16_t seq, uint32_t ssrc, size_t payload)
{
	uint32_t ts = (uint32_t)seq * 960u;
	b[0] = 0x80, b[1] = 111, b[2] = (uint8_t)(seq >> 8), b[3] = (uint8_t)seq;
	b[4] = (uint8_t)(ts >> 24), b[5] = (uint8_t)(ts >> 16), b[6] = (uint8_t)(ts >> 8), b[7] = (uint8_t)ts;
	b[8] = (uint8_t)(ssrc >> 24), b[9] = (uint8_t)(ssrc >> 16), b[10] = (uint8_t)(ssrc >> 8), b[11] = (uint8_t)ssrc;
	for (size_t i = 0; i < payload; i++)
		b[12 + i] = (uint8_t)(seq * 7 + i);
	return 12 + payload;
}

static size_t make_rtcp(uint8_t* b, uint32_t ssrc, uint32_t n)
{
	/* receiver report with one report block; n varies the contents */
	memset(b, 0, 32);
	b[0] = 0x81, b[1] = 201, b[3] = 7;
	b[4] = (uint8_t)(ssrc >> 24), b[5] = (uint8_t)(ssrc >> 16), b[6] = (uint8_t)(ssrc >> 8), b[7] = (uint8_t)ssrc;
	for (size_t i = 8; i < 32; i++)
		b[i] = (uint8_t)(n * 31 + i);
	return 32;
}

/* Unprotect a copy of p in place; the result must be `want` (and, when ok, `plain`). */
static void deliver(
  const char* what, srtp_t rx, int rtcp, const struct pkt* p, const struct pkt* plain, srtp_err_status_t want, int tamper_at)
{
	uint8_t buf[256];
	memcpy(buf, p->b, p->len);
	if (tamper_at >= 0)
		buf[tamper_at] ^= 0x01;
	size_t len = p->len;
	srtp_err_status_t e = rtcp ? srtp_unprotect_rtcp(rx, buf, p->len, buf, &len)
	                           : srtp_unprotect(rx, buf, p->len, buf, &len);
	check_result(what, e, want, buf, len, plain->b, plain->len);
}

static void replay_and_roc(const struct suite* su)
{
	uint8_t km[64];
	for (size_t i = 0; i < sizeof km; i++)
		km[i] = (uint8_t)(i * 29 + 3);
	size_t kl = srtp_profile_get_master_key_length(su->profile);
	size_t sl = srtp_profile_get_master_salt_length(su->profile);
	srtp_t tx = session(su->profile, ssrc_any_outbound, km, kl, km + kl, sl);
	srtp_t rx = session(su->profile, ssrc_any_inbound, km, kl, km + kl, sl);
	if (!tx || !rx)
		return;
	char what[160];

	/* RTP, sent in this order (the sender raises its ROC at 65535 -> 0) */
	static const uint16_t seqs[] = { 65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3, 479, 480, 1503 };
	enum { NSEQ = sizeof seqs / sizeof seqs[0] };
	static struct pkt plain[NSEQ], sent[NSEQ];
	for (size_t i = 0; i < NSEQ; i++)
	{
		plain[i].len = make_rtp(plain[i].b, seqs[i], 0x5eed0001, 40 + i);
		sent[i].len  = sizeof sent[i].b;
		CHECK(srtp_protect(tx, plain[i].b, plain[i].len, sent[i].b, &sent[i].len, 0) == srtp_err_status_ok);
		if (seqs[i] == 3)
		{
			/* retransmission without RTX (why mediasoup allows repeat tx): same bytes again */
			struct pkt again = { .len = sizeof again.b };
			CHECK(srtp_protect(tx, plain[7].b, plain[7].len, again.b, &again.len, 0) == srtp_err_status_ok);
			CHECK(again.len == sent[7].len && memcmp(again.b, sent[7].b, again.len) == 0);
		}
	}
	/* ... and received in this order, with the outcome each must have */
	static const struct
	{
		int i;
		srtp_err_status_t want;
		int tamper_at;
		const char* why;
	} rcv[] = {
		{ 0, srtp_err_status_ok, -1, "65530 first" },
		{ 1, srtp_err_status_ok, -1, "65531" },
		{ 2, srtp_err_status_ok, -1, "65532" },
		{ 4, srtp_err_status_ok, -1, "65534 after a gap" },
		{ 6, srtp_err_status_ok, -1, "0 across the wrap: receiver infers ROC 1" },
		{ 3, srtp_err_status_ok, -1, "65533 late, after the wrap: ROC 0 again" },
		{ 5, srtp_err_status_ok, -1, "65535 late" },
		{ 7, srtp_err_status_ok, -1, "1" },
		{ 8, srtp_err_status_ok, -1, "2" },
		{ 6, srtp_err_status_replay_fail, -1, "0 replayed" },
		{ 4, srtp_err_status_replay_fail, -1, "65534 replayed (previous ROC)" },
		{ 9, srtp_err_status_auth_fail, 14, "3 with a flipped payload bit" },
		{ 9, srtp_err_status_ok, -1, "3 genuine, after the forgery (which must not take its index)" },
		{ 12, srtp_err_status_ok, -1, "1503: a jump ahead larger than the window" },
		{ 11, srtp_err_status_ok, -1, "480: 1023 behind, the oldest the 1024 window holds" },
		{ 10, srtp_err_status_replay_old, -1, "479: 1024 behind, too old" },
		{ 11, srtp_err_status_replay_fail, -1, "480 replayed" },
		{ 0, srtp_err_status_replay_old, -1, "65530 (ROC 0) far too old" },
	};
	for (size_t k = 0; k < sizeof rcv / sizeof rcv[0]; k++)
	{
		snprintf(what, sizeof what, "%s RTP %s", su->name, rcv[k].why);
		deliver(what, rx, 0, &sent[rcv[k].i], &plain[rcv[k].i], rcv[k].want, rcv[k].tamper_at);
	}
	/* the header is authenticated: a changed sequence number fails (the ROC guess is then
	 * right but the index differs) */
	snprintf(what, sizeof what, "%s RTP 1503 with its sequence number changed", su->name);
	deliver(what, rx, 0, &sent[12], &plain[12], srtp_err_status_auth_fail, 3);

	/* SRTCP: the sender numbers each SSRC's packets 1, 2, 3 ... with the E flag set; the index
	 * word sits before the tag (AES-CM, RFC 3711 3.4) or after it (GCM, RFC 7714 9). */
	static struct pkt rplain[301], rsent[301], bplain[3], bsent[3];
	for (uint32_t n = 1; n <= 300; n++)
	{
		rplain[n].len = make_rtcp(rplain[n].b, 0x5eed0001, n);
		rsent[n].len  = sizeof rsent[n].b;
		CHECK(srtp_protect_rtcp(tx, rplain[n].b, rplain[n].len, rsent[n].b, &rsent[n].len, 0) == srtp_err_status_ok);
		CHECK(rsent[n].len == rplain[n].len + 4 + su->rtcp_tag);
		const uint8_t* w = rsent[n].b + rplain[n].len + (su->rtcp_tag == 16 ? 16 : 0);
		uint32_t word = (uint32_t)w[0] << 24 | (uint32_t)w[1] << 16 | (uint32_t)w[2] << 8 | w[3];
		if (word != (0x80000000u | n))
		{
			printf("  FAIL %s SRTCP packet %u carries E|index %08x\n", su->name, n, word);
			failures++;
		}
		checks++;
	}
	for (uint32_t n = 1; n <= 2; n++)
	{ /* another SSRC: its own index space, from 1 again */
		bplain[n].len = make_rtcp(bplain[n].b, 0x5eed0002, 1000 + n);
		bsent[n].len  = sizeof bsent[n].b;
		CHECK(srtp_protect_rtcp(tx, bplain[n].b, bplain[n].len, bsent[n].b, &bsent[n].len, 0) == srtp_err_status_ok);
		const uint8_t* w = bsent[n].b + bplain[n].len + (su->rtcp_tag == 16 ? 16 : 0);
		CHECK(w[0] == 0x80 && w[1] == 0 && w[2] == 0 && w[3] == n);
	}
	size_t iw = rplain[6].len + (su->rtcp_tag == 16 ? 16 : 0); /* offset of E|index */
	static const struct
	{
		int n;
		srtp_err_status_t want;
		int tamper;
		const char* why;
	} rrcv[] = {
		{ 1, srtp_err_status_ok, 0, "index 1" },
		{ 2, srtp_err_status_ok, 0, "index 2" },
		{ 3, srtp_err_status_ok, 0, "index 3" },
		{ 5, srtp_err_status_ok, 0, "index 5" },
		{ 4, srtp_err_status_ok, 0, "index 4, out of order" },
		{ 3, srtp_err_status_replay_fail, 0, "index 3 replayed" },
		{ 6, srtp_err_status_auth_fail, 1, "index 6 with its index word changed" },
		{ 6, srtp_err_status_auth_fail, 2, "index 6 with its E flag cleared" }, /* outcome per suite: below */
		{ 6, srtp_err_status_auth_fail, 3, "index 6 with a flipped payload bit" },
		{ 6, srtp_err_status_ok, 0, "index 6 genuine, after the forgeries" },
		{ 300, srtp_err_status_ok, 0, "index 300: a jump ahead" },
		{ 173, srtp_err_status_ok, 0, "index 173: the oldest the 128-packet SRTCP window holds" },
		{ 172, srtp_err_status_replay_old, 0, "index 172: too old" },
		{ 173, srtp_err_status_replay_fail, 0, "index 173 replayed" },
	};
	for (size_t k = 0; k < sizeof rrcv / sizeof rrcv[0]; k++)
	{
		int at = rrcv[k].tamper == 1 ? (int)iw + 3 : rrcv[k].tamper == 2 ? (int)iw : rrcv[k].tamper == 3 ? 12 : -1;
		snprintf(what, sizeof what, "%s SRTCP %s", su->name, rrcv[k].why);
		if (rrcv[k].tamper == 2)
		{ /* clear E (bit 7 of the word's first octet). libsrtp's AES-CM path refuses an
		   * unencrypted SRTCP packet outright when its policy encrypts (cant_check); the
		   * AEAD path takes E = 0 as RFC 7714 9.3 allows, and then the tag fails. */
			struct pkt t = rsent[rrcv[k].n];
			t.b[iw] &= 0x7f;
			deliver(what, rx, 1, &t, &rplain[rrcv[k].n],
			        su->rtcp_tag == 16 ? srtp_err_status_auth_fail : srtp_err_status_cant_check, -1);
			continue;
		}
		deliver(what, rx, 1, &rsent[rrcv[k].n], &rplain[rrcv[k].n], rrcv[k].want, at);
	}
	snprintf(what, sizeof what, "%s SRTCP other SSRC index 2", su->name);
	deliver(what, rx, 1, &bsent[2], &bplain[2], srtp_err_status_ok, -1);
	snprintf(what, sizeof what, "%s SRTCP other SSRC index 1 (its own window)", su->name);
	deliver(what, rx, 1, &bsent[1], &bplain[1], srtp_err_status_ok, -1);

	CHECK(srtp_dealloc(tx) == srtp_err_status_ok);
	CHECK(srtp_dealloc(rx) == srtp_err_status_ok);
	printf("  replay window, ROC and SRTCP index %s done\n", su->name);
}

/* ---- interop with srtp_reference.py ------------------------------------------------- */

/* SCRIPT lines: "S SUITE KEY SALT" starts a suite (new sending and receiving sessions);
 * "P PLAIN" / "Q PLAIN": protect as RTP / RTCP and write "P PLAIN PROTECTED" to OUT;
 * "U PROTECTED EXPECT" / "V PROTECTED EXPECT": unprotect as SRTP / SRTCP, where EXPECT is the
 * plaintext or !STATUS (replay_fail, replay_old, auth_fail). */
static void interop(const char* script_path, const char* out_path)
{
	FILE* in  = fopen(script_path, "r");
	FILE* out = fopen(out_path, "w");
	CHECK(in != NULL && out != NULL);
	if (!in || !out)
		return;
	static uint8_t key[64], salt[64], a[4096], b[4096], buf[8192];
	char* line = NULL;
	size_t cap = 0;
	srtp_t tx = NULL, rx = NULL;
	const struct suite* su = NULL;
	int lineno = 0, protected_n = 0, unprotected_n = 0, suites_seen = 0;
	while (getline(&line, &cap, in) > 0)
	{
		lineno++;
		char* tok[4];
		int nt = 0;
		for (char* t = strtok(line, " \t\r\n"); t && nt < 4; t = strtok(NULL, " \t\r\n"))
			tok[nt++] = t;
		if (nt == 0 || tok[0][0] == '#')
			continue;
		char what[200];
		if (strcmp(tok[0], "S") == 0 && nt == 4)
		{
			if (su)
				printf("  interop %s: %d packets protected for the reference, %d unprotected as scripted\n",
				       su->name, protected_n, unprotected_n);
			if (tx)
				srtp_dealloc(tx);
			if (rx)
				srtp_dealloc(rx);
			tx = rx = NULL;
			protected_n = unprotected_n = 0;
			su = suite_by_name(tok[1]);
			size_t kl = unhex(tok[2], key, sizeof key), sl = unhex(tok[3], salt, sizeof salt);
			CHECK(su != NULL && kl != (size_t)-1 && sl != (size_t)-1);
			if (!su || kl == (size_t)-1 || sl == (size_t)-1)
				break;
			tx = session(su->profile, ssrc_any_outbound, key, kl, salt, sl);
			rx = session(su->profile, ssrc_any_inbound, key, kl, salt, sl);
			fprintf(out, "S %s %s %s\n", tok[1], tok[2], tok[3]);
			suites_seen++;
			continue;
		}
		if (!tx || !rx)
			break;
		if ((strcmp(tok[0], "P") == 0 || strcmp(tok[0], "Q") == 0) && nt == 2)
		{
			size_t pl = unhex(tok[1], a, sizeof a), olen = sizeof buf;
			CHECK(pl != (size_t)-1);
			if (pl == (size_t)-1)
				continue;
			srtp_err_status_t e = tok[0][0] == 'P' ? srtp_protect(tx, a, pl, buf, &olen, 0)
			                                       : srtp_protect_rtcp(tx, a, pl, buf, &olen, 0);
			checks++;
			if (e != srtp_err_status_ok)
			{
				printf("  FAIL interop %s line %d: protect: %s\n", su->name, lineno, status_name(e));
				failures++;
				continue;
			}
			fprintf(out, "%s ", tok[0]);
			print_hex(out, a, pl);
			fputc(' ', out);
			print_hex(out, buf, olen);
			fputc('\n', out);
			protected_n++;
			continue;
		}
		if ((strcmp(tok[0], "U") == 0 || strcmp(tok[0], "V") == 0) && nt == 3)
		{
			size_t cl = unhex(tok[1], buf, sizeof buf), pl = 0;
			srtp_err_status_t want = srtp_err_status_ok;
			int ok = cl != (size_t)-1;
			if (tok[2][0] == '!')
				ok = ok && status_by_name(tok[2] + 1, &want);
			else
				ok = ok && (pl = unhex(tok[2], b, sizeof b)) != (size_t)-1;
			CHECK(ok);
			if (!ok)
				continue;
			size_t len = cl;
			srtp_err_status_t e = tok[0][0] == 'U' ? srtp_unprotect(rx, buf, cl, buf, &len)
			                                       : srtp_unprotect_rtcp(rx, buf, cl, buf, &len);
			snprintf(what, sizeof what, "interop %s line %d: %s unprotect of the reference's packet",
			         su->name, lineno, tok[0][0] == 'U' ? "SRTP" : "SRTCP");
			check_result(what, e, want, buf, len, b, pl);
			unprotected_n++;
			continue;
		}
		printf("  FAIL %s:%d: bad line\n", script_path, lineno);
		checks++, failures++;
	}
	if (su)
		printf("  interop %s: %d packets protected for the reference, %d unprotected as scripted\n",
		       su->name, protected_n, unprotected_n);
	CHECK(suites_seen == (int)NSUITES);
	free(line);
	fclose(in);
	fclose(out);
	if (tx)
		srtp_dealloc(tx);
	if (rx)
		srtp_dealloc(rx);
}

int main(int argc, char** argv)
{
	if (!(argc == 2 || (argc == 4 && strcmp(argv[1], "interop") == 0)))
	{
		fprintf(stderr, "usage: %s KNOWN_ANSWERS | %s interop SCRIPT OUT\n", argv[0], argv[0]);
		return 2;
	}
	CHECK(srtp_init() == srtp_err_status_ok);
	printf("version: %s\n", srtp_get_version_string());
	if (argc == 4)
		interop(argv[2], argv[3]);
	else
	{
		run("AES_CM_128_HMAC_SHA1_80", srtp_profile_aes128_cm_sha1_80, 10, 10);
		run("AES_CM_128_HMAC_SHA1_32", srtp_profile_aes128_cm_sha1_32, 4, 10); /* SRTCP keeps the 80-bit tag */
		run("AEAD_AES_128_GCM", srtp_profile_aead_aes_128_gcm, 16, 16);
		run("AEAD_AES_256_GCM", srtp_profile_aead_aes_256_gcm, 16, 16);
		known_answers(argv[1]);
		for (size_t i = 0; i < NSUITES; i++)
			replay_and_roc(&suites[i]);
	}
	CHECK(srtp_shutdown() == srtp_err_status_ok);
	printf("%d passed, %d failed\n", checks - failures, failures);
	return failures != 0;
}
