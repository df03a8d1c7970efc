/* Tests of the libsrtp 3 API adapter (worker-build/shims/libsrtp3) that mediasoup's SRTP runs
 * on. Linked against the libmediasoup-worker.a the server is built with, by
 * tests/srtp_adapter.rs. For every crypto suite: RTP and RTCP, in place and out of place,
 * tamper -> auth failure, replay -> replay failure, too-small output, bad key/salt sizes, MKI. */
#include <srtp.h>
#include <stdio.h>
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

int main(void)
{
	CHECK(srtp_init() == srtp_err_status_ok);
	printf("version: %s\n", srtp_get_version_string());
	run("AES_CM_128_HMAC_SHA1_80", srtp_profile_aes128_cm_sha1_80, 10, 10);
	run("AES_CM_128_HMAC_SHA1_32", srtp_profile_aes128_cm_sha1_32, 4, 10); /* SRTCP keeps the 80-bit tag */
	run("AEAD_AES_128_GCM", srtp_profile_aead_aes_128_gcm, 16, 16);
	run("AEAD_AES_256_GCM", srtp_profile_aead_aes_256_gcm, 16, 16);
	CHECK(srtp_shutdown() == srtp_err_status_ok);
	printf("%d passed, %d failed\n", checks - failures, failures);
	return failures != 0;
}
