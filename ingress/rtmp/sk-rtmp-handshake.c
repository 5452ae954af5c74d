/* streamkeeper: RTMP handshake, server side (see sk-rtmp-handshake.h). */
#include "sk-rtmp-handshake.h"

#include <string.h>

#include "sk-amf0.h"

#define DIGEST_LEN 32

/* The public Flash handshake keys: a text prefix and 32 common bytes. Clients sign C1 with the
 * player prefix, servers sign S1 with the media-server prefix and S2 with the whole key. */
static const guint8 common_key_tail[32] = {
  0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57,
  0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
};
static const char player_key_text[] = "Genuine Adobe Flash Player 001";
static const char server_key_text[] = "Genuine Adobe Flash Media Server 001";

typedef enum {
  STATE_C0C1,
  STATE_C2,
  STATE_DONE,
} State;

struct _SkRtmpHandshake {
  State state;
  gboolean complex;
};

SkRtmpHandshake *
sk_rtmp_handshake_new (void)
{
  return g_new0 (SkRtmpHandshake, 1);
}

void
sk_rtmp_handshake_free (SkRtmpHandshake *self)
{
  g_free (self);
}

gboolean
sk_rtmp_handshake_is_done (SkRtmpHandshake *self)
{
  return self->state == STATE_DONE;
}

gboolean
sk_rtmp_handshake_is_complex (SkRtmpHandshake *self)
{
  return self->complex;
}

static void
fill_random (guint8 *buf, gsize len)
{
  /* Handshake padding needs no secrecy, only variety. */
  for (gsize i = 0; i < len; i += 4) {
    guint32 r = g_random_int ();
    memcpy (buf + i, &r, MIN (4, len - i));
  }
}

static void
hmac_sha256 (const guint8 *key, gsize key_len, const guint8 *a, gsize a_len, const guint8 *b,
             gsize b_len, guint8 out[DIGEST_LEN])
{
  g_autoptr (GHmac) hmac = g_hmac_new (G_CHECKSUM_SHA256, key, key_len);
  gsize len = DIGEST_LEN;
  g_hmac_update (hmac, a, a_len);
  if (b_len > 0)
    g_hmac_update (hmac, b, b_len);
  g_hmac_get_digest (hmac, out, &len);
}

/* Where the digest sits for scheme 0 (offset base 8) or 1 (base 772). */
static gsize
digest_offset (const guint8 *block, guint scheme)
{
  gsize base = scheme == 0 ? 8 : 772;
  guint sum = block[base] + block[base + 1] + block[base + 2] + block[base + 3];
  return sum % 728 + base + 4;
}

/* HMAC over the block with the 32 digest bytes at @off left out. */
static void
block_digest (const guint8 *block, gsize off, const guint8 *key, gsize key_len,
              guint8 out[DIGEST_LEN])
{
  hmac_sha256 (key, key_len, block, off, block + off + DIGEST_LEN,
               SK_RTMP_HANDSHAKE_SIZE - off - DIGEST_LEN, out);
}

/* Finds C1's digest; returns the scheme (0/1) or -1 if C1 carries none. */
static int
find_client_digest (const guint8 *c1, guint8 digest[DIGEST_LEN])
{
  for (guint scheme = 0; scheme < 2; scheme++) {
    gsize off = digest_offset (c1, scheme);
    guint8 expect[DIGEST_LEN];
    block_digest (c1, off, (const guint8 *)player_key_text, strlen (player_key_text), expect);
    if (memcmp (expect, c1 + off, DIGEST_LEN) == 0) {
      memcpy (digest, c1 + off, DIGEST_LEN);
      return (int)scheme;
    }
  }
  return -1;
}

static void
write_response (SkRtmpHandshake *self, const guint8 *c1, GByteArray *out)
{
  guint8 s0 = 3;
  guint8 s1[SK_RTMP_HANDSHAKE_SIZE];
  guint8 s2[SK_RTMP_HANDSHAKE_SIZE];
  guint8 client_digest[DIGEST_LEN];
  guint32 now = (guint32)(g_get_monotonic_time () / 1000);
  int scheme = -1;

  /* A zero version field means the client does not use digests (plain handshake). */
  if (c1[4] | c1[5] | c1[6] | c1[7])
    scheme = find_client_digest (c1, client_digest);
  self->complex = scheme >= 0;

  fill_random (s1, sizeof s1);
  s1[0] = now >> 24;
  s1[1] = now >> 16;
  s1[2] = now >> 8;
  s1[3] = now;
  if (self->complex) {
    static const guint8 server_version[4] = { 4, 5, 0, 1 };
    memcpy (s1 + 4, server_version, 4);
    gsize off = digest_offset (s1, scheme);
    block_digest (s1, off, (const guint8 *)server_key_text, strlen (server_key_text), s1 + off);

    guint8 full_key[sizeof server_key_text - 1 + sizeof common_key_tail];
    guint8 s2_key[DIGEST_LEN];
    memcpy (full_key, server_key_text, sizeof server_key_text - 1);
    memcpy (full_key + sizeof server_key_text - 1, common_key_tail, sizeof common_key_tail);
    hmac_sha256 (full_key, sizeof full_key, client_digest, DIGEST_LEN, NULL, 0, s2_key);
    fill_random (s2, sizeof s2);
    hmac_sha256 (s2_key, DIGEST_LEN, s2, SK_RTMP_HANDSHAKE_SIZE - DIGEST_LEN, NULL, 0,
                 s2 + SK_RTMP_HANDSHAKE_SIZE - DIGEST_LEN);
  } else {
    memset (s1 + 4, 0, 4);
    memcpy (s2, c1, sizeof s2);
  }

  g_byte_array_append (out, &s0, 1);
  g_byte_array_append (out, s1, sizeof s1);
  g_byte_array_append (out, s2, sizeof s2);
}

SkRtmpParseStatus
sk_rtmp_handshake_feed (SkRtmpHandshake *self, const guint8 *data, gsize size, gsize *consumed,
                        gsize *needed, GByteArray *out, GError **error)
{
  *consumed = 0;
  *needed = 0;

  switch (self->state) {
    case STATE_C0C1:
      /* Refuse a wrong version at once rather than waiting for 1536 more bytes. */
      if (size >= 1 && data[0] != 3) {
        g_set_error (error, SK_RTMP_ERROR, SK_RTMP_ERROR_PROTOCOL,
                     "handshake: unsupported RTMP version %u (only 3)", data[0]);
        return SK_RTMP_PARSE_ERROR;
      }
      if (size < 1 + SK_RTMP_HANDSHAKE_SIZE) {
        *needed = 1 + SK_RTMP_HANDSHAKE_SIZE;
        return SK_RTMP_PARSE_NEED_MORE;
      }
      write_response (self, data + 1, out);
      *consumed = 1 + SK_RTMP_HANDSHAKE_SIZE;
      self->state = STATE_C2;
      return SK_RTMP_PARSE_OK;
    case STATE_C2:
      /* Clients echo S1 more or less faithfully; nobody checks C2 strictly, neither do we. */
      if (size < SK_RTMP_HANDSHAKE_SIZE) {
        *needed = SK_RTMP_HANDSHAKE_SIZE;
        return SK_RTMP_PARSE_NEED_MORE;
      }
      *consumed = SK_RTMP_HANDSHAKE_SIZE;
      self->state = STATE_DONE;
      return SK_RTMP_PARSE_OK;
    case STATE_DONE:
    default:
      g_set_error (error, SK_RTMP_ERROR, SK_RTMP_ERROR_PROTOCOL, "handshake already done");
      return SK_RTMP_PARSE_ERROR;
  }
}
