/*
 * sk-srtp.c against libsrtp (the library webrtcbin's srtpenc/srtpdec and every viewer's
 * browser-grade stack implement the same RFC 3711): the same keys and packets must give the
 * same SRTP bytes, libsrtp must accept ours and we theirs, across sequence number wraps,
 * reordering, several SSRCs, CSRCs and header extensions; and the receiver refuses forgeries,
 * replays and more SSRCs than it follows. With -m perf, prints the cost per packet of both.
 */
#include <string.h>

#include <srtp2/srtp.h>

#include "rooms/sk-srtp.h"

#define MASTER_LEN (SK_SRTP_MASTER_KEY_LEN + SK_SRTP_MASTER_SALT_LEN)
#define MAX_PACKET 1500

typedef struct {
  srtp_t tx, rx; /* libsrtp: sender (the reference) and receiver */
  SkSrtpSender *sender;
  SkSrtpReceiver *receiver;
  guint8 master[MASTER_LEN];
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  guint tag_len = GPOINTER_TO_UINT (data);
  guint8 *master = f->master;
  for (guint i = 0; i < MASTER_LEN; i++)
    master[i] = g_test_rand_int_range (0, 256);

  for (int dir = 0; dir < 2; dir++) {
    srtp_policy_t policy;
    memset (&policy, 0, sizeof policy);
    if (tag_len == 10)
      srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80 (&policy.rtp);
    else
      srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32 (&policy.rtp);
    srtp_crypto_policy_set_rtcp_default (&policy.rtcp);
    policy.ssrc.type = dir == 0 ? ssrc_any_outbound : ssrc_any_inbound;
    policy.key = master;
    policy.window_size = 1024;
    g_assert_cmpint (srtp_create (dir == 0 ? &f->tx : &f->rx, &policy), ==, srtp_err_status_ok);
  }
  g_autoptr (GError) error = NULL;
  f->sender = sk_srtp_sender_new (master, MASTER_LEN, tag_len, &error);
  g_assert_no_error (error);
  f->receiver = sk_srtp_receiver_new (master, MASTER_LEN, tag_len, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (sk_srtp_sender_get_tag_len (f->sender), ==, tag_len);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  srtp_dealloc (f->tx);
  srtp_dealloc (f->rx);
  sk_srtp_sender_free (f->sender);
  sk_srtp_receiver_free (f->receiver);
}

/* An RTP packet with @n_csrc CSRCs, an RFC 8285 header extension of @ext_words words if
 * @ext_words >= 0, and @payload_len random bytes. Returns its length. */
static gsize
make_packet (guint8 *p, guint32 ssrc, guint16 seq, guint n_csrc, gint ext_words, gsize payload_len)
{
  gsize len = 12;
  p[0] = 0x80 | (ext_words >= 0 ? 0x10 : 0) | n_csrc;
  p[1] = 96;
  GST_WRITE_UINT16_BE (p + 2, seq);
  GST_WRITE_UINT32_BE (p + 4, seq * 3000u);
  GST_WRITE_UINT32_BE (p + 8, ssrc);
  for (guint i = 0; i < n_csrc; i++, len += 4)
    GST_WRITE_UINT32_BE (p + len, 0x1000 + i);
  if (ext_words >= 0) {
    GST_WRITE_UINT16_BE (p + len, 0xbede);
    GST_WRITE_UINT16_BE (p + len + 2, ext_words);
    len += 4;
    for (gint i = 0; i < 4 * ext_words; i++)
      p[len++] = g_test_rand_int_range (0, 256);
  }
  for (gsize i = 0; i < payload_len; i++)
    p[len++] = g_test_rand_int_range (0, 256);
  return len;
}

/* Protects one packet both ways; they must agree, libsrtp must take ours back and we theirs. */
static void
check_packet (Fixture *f, guint32 ssrc, guint16 seq)
{
  guint8 plain[MAX_PACKET], ours[MAX_PACKET], theirs[MAX_PACKET];
  gint ext = g_test_rand_int_range (-1, 4);
  gsize len = make_packet (plain, ssrc, seq, g_test_rand_int_range (0, 3), ext,
                           g_test_rand_int_range (0, 1200));
  memcpy (ours, plain, len);
  memcpy (theirs, plain, len);

  gsize ours_len = sk_srtp_sender_protect (f->sender, ours, len, sizeof ours);
  int theirs_len = (int)len;
  g_assert_cmpint (srtp_protect (f->tx, theirs, &theirs_len), ==, srtp_err_status_ok);
  g_assert_cmpuint (ours_len, ==, (gsize)theirs_len);
  if (memcmp (ours, theirs, ours_len) != 0)
    g_error ("SSRC %08x seq %u (%" G_GSIZE_FORMAT " bytes): SRTP differs from libsrtp's", ssrc, seq,
             len);

  int back_len = (int)ours_len;
  g_assert_cmpint (srtp_unprotect (f->rx, ours, &back_len), ==, srtp_err_status_ok);
  g_assert_cmpint (back_len, ==, (int)len);
  g_assert_cmpmem (ours, len, plain, len);

  gsize rtp_len = 0;
  g_assert_cmpint (sk_srtp_receiver_unprotect (f->receiver, theirs, theirs_len, &rtp_len), ==,
                   SK_SRTP_OK);
  g_assert_cmpmem (theirs, rtp_len, plain, len);
}

/* A protected copy of an RTP packet of @ssrc/@seq, into @p; its length. */
static gsize
protected_packet (Fixture *f, guint8 *p, guint32 ssrc, guint16 seq)
{
  gsize len = make_packet (p, ssrc, seq, 0, -1, 40);
  gsize out = sk_srtp_sender_protect (f->sender, p, len, MAX_PACKET);
  g_assert_cmpuint (out, >, 0);
  return out;
}

static SkSrtpStatus
unprotect_copy (Fixture *f, const guint8 *p, gsize len)
{
  guint8 copy[MAX_PACKET];
  gsize rtp_len = 0;
  memcpy (copy, p, len);
  return sk_srtp_receiver_unprotect (f->receiver, copy, len, &rtp_len);
}

/* Every packet once: a second copy is refused, so is one older than the 128-packet window;
 * a late packet inside the window that never came is taken. */
static void
test_refuses_replays (Fixture *f, gconstpointer data)
{
  guint8 p[200][MAX_PACKET];
  gsize len[200];
  for (guint i = 0; i < 200; i++)
    len[i] = protected_packet (f, p[i], 0x77, (guint16)(65500 + i));
  for (guint i = 0; i < 200; i++) {
    if (i == 10 || i == 60)
      continue; /* lost, for now */
    g_assert_cmpint (unprotect_copy (f, p[i], len[i]), ==, SK_SRTP_OK);
    g_assert_cmpint (unprotect_copy (f, p[i], len[i]), ==, SK_SRTP_REPLAYED);
  }
  /* highest is 199: 60 is 139 behind, out of the window; 10 further still */
  g_assert_cmpint (unprotect_copy (f, p[60], len[60]), ==, SK_SRTP_REPLAYED);
  g_assert_cmpint (unprotect_copy (f, p[10], len[10]), ==, SK_SRTP_REPLAYED);
  g_assert_cmpint (unprotect_copy (f, p[150], len[150]), ==, SK_SRTP_REPLAYED);
  g_assert_cmpint (unprotect_copy (f, p[72], len[72]), ==, SK_SRTP_REPLAYED);

  guint8 late[MAX_PACKET], later[MAX_PACKET];
  gsize late_len = protected_packet (f, late, 0x78, 1000);
  gsize later_len = protected_packet (f, later, 0x78, 1100);
  g_assert_cmpint (unprotect_copy (f, later, later_len), ==, SK_SRTP_OK);
  g_assert_cmpint (unprotect_copy (f, late, late_len), ==, SK_SRTP_OK);
  g_assert_cmpint (unprotect_copy (f, late, late_len), ==, SK_SRTP_REPLAYED);
}

/* One flipped bit anywhere, in header, payload or tag, fails authentication and changes
 * nothing: the real packet is still taken afterwards. So is any packet under another key. */
static void
test_refuses_forgeries (Fixture *f, gconstpointer data)
{
  guint8 p[MAX_PACKET], forged[MAX_PACKET];
  gsize len = protected_packet (f, p, 0x99, 5);
  for (gsize bit = 0; bit < len * 8; bit += 7) {
    memcpy (forged, p, len);
    forged[bit / 8] ^= 1 << (bit % 8);
    SkSrtpStatus st = unprotect_copy (f, forged, len);
    /* flipping the version or the extension bit can make it malformed before any check */
    if (st != SK_SRTP_MALFORMED)
      g_assert_cmpint (st, ==, SK_SRTP_AUTH_FAILED);
  }
  g_assert_cmpint (unprotect_copy (f, p, len), ==, SK_SRTP_OK);

  guint8 other_master[MASTER_LEN];
  memcpy (other_master, f->master, MASTER_LEN);
  other_master[MASTER_LEN - 1] ^= 0x80; /* the salt's last bit */
  g_autoptr (SkSrtpSender) other
      = sk_srtp_sender_new (other_master, MASTER_LEN, sk_srtp_sender_get_tag_len (f->sender), NULL);
  gsize plain_len = make_packet (p, 0x99, 6, 0, -1, 40);
  len = sk_srtp_sender_protect (other, p, plain_len, sizeof p);
  g_assert_cmpint (unprotect_copy (f, p, len), ==, SK_SRTP_AUTH_FAILED);

  g_assert_cmpint (unprotect_copy (f, p, 11), ==, SK_SRTP_MALFORMED);
  g_assert_cmpint (unprotect_copy (f, p, 3), ==, SK_SRTP_MALFORMED);
}

/* Forged packets of new SSRCs take no room; authentic ones up to the limit do. */
static void
test_ssrc_limit (Fixture *f, gconstpointer data)
{
  guint8 p[MAX_PACKET];
  for (guint32 ssrc = 1000; ssrc < 1100; ssrc++) {
    gsize len = protected_packet (f, p, ssrc, 1);
    p[len - 1] ^= 1;
    g_assert_cmpint (unprotect_copy (f, p, len), ==, SK_SRTP_AUTH_FAILED);
  }
  for (guint32 ssrc = 1; ssrc <= SK_SRTP_MAX_SSRCS; ssrc++) {
    gsize len = protected_packet (f, p, ssrc, 1);
    g_assert_cmpint (unprotect_copy (f, p, len), ==, SK_SRTP_OK);
  }
  gsize len = protected_packet (f, p, SK_SRTP_MAX_SSRCS + 1, 1);
  g_assert_cmpint (unprotect_copy (f, p, len), ==, SK_SRTP_TOO_MANY_SSRCS);
  len = protected_packet (f, p, 1, 2);
  g_assert_cmpint (unprotect_copy (f, p, len), ==, SK_SRTP_OK);
}

/* Three SSRCs interleaved: one wraps its sequence number, one starts above half of the
 * sequence space (where libsrtp keeps the rollover counter at 0), one is reordered a little
 * (as retransmissions and several send paths interleave), including across its wrap; and one
 * whose second packet is from before its first. */
static void
test_matches_libsrtp (Fixture *f, gconstpointer data)
{
  guint16 wrapping = 65400, high = 40000, reordered = 65500;
  for (guint i = 0; i < 400; i++) {
    check_packet (f, 0x11111111, wrapping++);
    check_packet (f, 0x22222222, high++);
    /* pairs sent the wrong way round: 65501, 65500, 65503, 65502, … 1, 0, … */
    guint16 seq = (i % 2 == 0) ? reordered + 1 : reordered - 1;
    check_packet (f, 0xcafef00d, seq);
    reordered += 1;
  }
  /* a packet from before the first one, from the end of the sequence space: ROC stays 0 */
  check_packet (f, 0x55555555, 10);
  check_packet (f, 0x55555555, 65530);
  check_packet (f, 0x55555555, 11);
}

/* A long run on one SSRC: several rollovers, with a late packet before and after each. */
static void
test_rollovers (Fixture *f, gconstpointer data)
{
  guint16 seq = 1;
  for (guint i = 0; i < 3 * 65536 + 100; i++) {
    if (i % 4096 == 0) {
      guint8 p[MAX_PACKET];
      gsize len = make_packet (p, 0x33333333, seq, 0, -1, 100);
      gsize ours_len = sk_srtp_sender_protect (f->sender, p, len, sizeof p);
      /* both receivers see one packet in 4096: enough to follow the rollovers */
      g_assert_cmpint (unprotect_copy (f, p, ours_len), ==, SK_SRTP_OK);
      int theirs_len = (int)ours_len;
      g_assert_cmpint (srtp_unprotect (f->rx, p, &theirs_len), ==, srtp_err_status_ok);
      g_assert_cmpint (theirs_len, ==, (int)len);
      seq++;
      continue;
    }
    if (seq >= 65530 || seq <= 5) {
      check_packet (f, 0x33333333, seq++);
      continue;
    }
    /* in between, only keep both senders' state moving */
    guint8 a[64], b[64];
    gsize len = make_packet (a, 0x33333333, seq++, 0, -1, 20);
    memcpy (b, a, len);
    int blen = (int)len;
    g_assert_cmpuint (sk_srtp_sender_protect (f->sender, a, len, sizeof a), >, 0);
    g_assert_cmpint (srtp_protect (f->tx, b, &blen), ==, srtp_err_status_ok);
    g_assert_cmpmem (a, (gsize)blen, b, (gsize)blen);
  }
}

/* Nothing is written for what is not an RTP packet that fits. */
static void
test_refuses_malformed (Fixture *f, gconstpointer data)
{
  guint8 p[MAX_PACKET], copy[MAX_PACKET];
  struct {
    const char *what;
    gsize len, size;
    void (*mangle) (guint8 *p);
  } cases[] = {
    { "shorter than a header", 11, sizeof p, NULL },
    { "no room for the tag", 112, 112 + sk_srtp_sender_get_tag_len (f->sender) - 1, NULL },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    gsize len = make_packet (p, 1, 1, 0, -1, 100);
    g_assert_cmpuint (len, ==, 112);
    memcpy (copy, p, sizeof p);
    g_test_message ("%s", cases[i].what);
    g_assert_cmpuint (sk_srtp_sender_protect (f->sender, p, cases[i].len, cases[i].size), ==, 0);
    g_assert_cmpmem (p, sizeof p, copy, sizeof copy);
  }

  /* version 1; CSRCs past the end; a header extension whose length runs past the end */
  gsize len = make_packet (p, 1, 2, 0, -1, 0);
  p[0] = (p[0] & 0x3f) | 0x40;
  g_assert_cmpuint (sk_srtp_sender_protect (f->sender, p, len, sizeof p), ==, 0);
  len = make_packet (p, 1, 3, 3, -1, 0);
  g_assert_cmpuint (sk_srtp_sender_protect (f->sender, p, len - 1, sizeof p), ==, 0);
  len = make_packet (p, 1, 4, 0, 2, 0);
  GST_WRITE_UINT16_BE (p + 14, 3);
  memcpy (copy, p, len);
  g_assert_cmpuint (sk_srtp_sender_protect (f->sender, p, len, sizeof p), ==, 0);
  g_assert_cmpmem (p, len, copy, len);
  len = make_packet (p, 1, 5, 0, 0, 0);
  g_assert_cmpuint (sk_srtp_sender_protect (f->sender, p, len - 1, sizeof p), ==, 0);
}

static void
test_refuses_bad_keys (void)
{
  guint8 master[MASTER_LEN + 16] = { 0 };
  g_autoptr (GError) error = NULL;
  g_assert_null (sk_srtp_sender_new (master, MASTER_LEN - 1, 10, &error));
  g_assert_nonnull (error);
  g_clear_error (&error);
  g_assert_null (sk_srtp_sender_new (master, MASTER_LEN + 16, 10, &error));
  g_assert_nonnull (error);
  g_clear_error (&error);
  g_assert_null (sk_srtp_sender_new (master, MASTER_LEN, 8, &error));
  g_assert_nonnull (error);
}

/* -m perf: the cost of protecting a 1200-byte packet, ours and libsrtp's (NSS in Debian). */
static void
test_speed (Fixture *f, gconstpointer data)
{
  const guint n = 200000;
  guint8 plain[MAX_PACKET], p[MAX_PACKET];
  gsize len = make_packet (plain, 0x44444444, 0, 0, -1, 1188);

  for (int which = 0; which < 2; which++) {
    gint64 t0 = g_get_monotonic_time ();
    for (guint i = 0; i < n; i++) {
      memcpy (p, plain, len);
      GST_WRITE_UINT16_BE (p + 2, (guint16)i);
      if (which == 0) {
        sk_srtp_sender_protect (f->sender, p, len, sizeof p);
      } else {
        int l = (int)len;
        srtp_protect (f->tx, p, &l);
      }
    }
    double us = (double)(g_get_monotonic_time () - t0) / n;
    g_test_minimized_result (us, "%s: %.2f us per 1200-byte packet",
                             which == 0 ? "sk-srtp" : "libsrtp", us);
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_assert_cmpint (srtp_init (), ==, srtp_err_status_ok);

  g_test_add ("/srtp/sha1-80/matches-libsrtp", Fixture, GUINT_TO_POINTER (10), fixture_setup,
              test_matches_libsrtp, fixture_teardown);
  g_test_add ("/srtp/sha1-32/matches-libsrtp", Fixture, GUINT_TO_POINTER (4), fixture_setup,
              test_matches_libsrtp, fixture_teardown);
  g_test_add ("/srtp/sha1-80/rollovers", Fixture, GUINT_TO_POINTER (10), fixture_setup,
              test_rollovers, fixture_teardown);
  g_test_add ("/srtp/sha1-80/refuses-malformed", Fixture, GUINT_TO_POINTER (10), fixture_setup,
              test_refuses_malformed, fixture_teardown);
  g_test_add ("/srtp/sha1-80/refuses-replays", Fixture, GUINT_TO_POINTER (10), fixture_setup,
              test_refuses_replays, fixture_teardown);
  g_test_add ("/srtp/sha1-80/refuses-forgeries", Fixture, GUINT_TO_POINTER (10), fixture_setup,
              test_refuses_forgeries, fixture_teardown);
  g_test_add ("/srtp/sha1-32/refuses-forgeries", Fixture, GUINT_TO_POINTER (4), fixture_setup,
              test_refuses_forgeries, fixture_teardown);
  g_test_add ("/srtp/sha1-80/ssrc-limit", Fixture, GUINT_TO_POINTER (10), fixture_setup,
              test_ssrc_limit, fixture_teardown);
  g_test_add_func ("/srtp/refuses-bad-keys", test_refuses_bad_keys);
  if (g_test_perf ())
    g_test_add ("/srtp/speed", Fixture, GUINT_TO_POINTER (10), fixture_setup, test_speed,
                fixture_teardown);
  int ret = g_test_run ();
  srtp_shutdown ();
  return ret;
}
