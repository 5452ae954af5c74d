/* Unit tests for the RTMP parsers on crafted byte sequences: AMF0, handshake, chunk streams,
 * and the command logic of one connection. */
#include <string.h>

#include "ingress/rtmp/sk-amf0.h"
#include "ingress/rtmp/sk-rtmp-chunk.h"
#include "ingress/rtmp/sk-rtmp-connection.h"
#include "ingress/rtmp/sk-rtmp-handshake.h"

static const SkRtmpChunkLimits limits = {
  .max_chunk_size = 65536,
  .max_message_size = 8 * 1024 * 1024,
  .max_chunk_streams = 8,
};

/* ---- AMF0 ---- */

static GByteArray *
sample_command (void)
{
  GByteArray *b = g_byte_array_new ();
  g_autoptr (SkAmf0Value) obj = sk_amf0_value_new_object ();
  g_autoptr (SkAmf0Value) inner = sk_amf0_value_new_object ();
  sk_amf0_object_append (inner, "flag", sk_amf0_value_new_boolean (TRUE));
  sk_amf0_object_append (obj, "app", sk_amf0_value_new_string ("live"));
  sk_amf0_object_append (obj, "objectEncoding", sk_amf0_value_new_number (3));
  sk_amf0_object_append (obj, "nested", g_steal_pointer (&inner));
  sk_amf0_write_string (b, "connect");
  sk_amf0_write_number (b, 1);
  sk_amf0_write_value (b, obj);
  sk_amf0_write_null (b);
  /* An ECMA array and a strict array, as onMetaData and some commands carry. */
  static const guint8 tail[]
      = { 0x08, 0,    0, 0, 1, 0, 1,    'w',  0,    0x40, 0x74, 0, 0, 0, 0, 0, 0, 0, 0,
          9,    0x0a, 0, 0, 0, 2, 0x05, 0x0b, 0x42, 0x79, 0,    0, 0, 0, 0, 0, 0, 0 };
  g_byte_array_append (b, tail, sizeof tail);
  return b;
}

static void
test_amf0_roundtrip (void)
{
  g_autoptr (GByteArray) b = sample_command ();
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) values = sk_amf0_decode_all (b->data, b->len, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (values->len, ==, 6);
  g_assert_cmpstr (sk_amf0_value_get_string (values->pdata[0]), ==, "connect");
  g_assert_cmpfloat (sk_amf0_value_get_number (values->pdata[1], -1), ==, 1);
  const SkAmf0Value *obj = values->pdata[2];
  g_assert_cmpstr (sk_amf0_value_get_string (sk_amf0_object_get (obj, "app")), ==, "live");
  g_assert_cmpfloat (sk_amf0_value_get_number (sk_amf0_object_get (obj, "objectEncoding"), 0), ==,
                     3);
  const SkAmf0Value *nested = sk_amf0_object_get (obj, "nested");
  g_assert_true (sk_amf0_object_get (nested, "flag")->boolean);
  g_assert_cmpint (((SkAmf0Value *)values->pdata[3])->type, ==, SK_AMF0_NULL);
  const SkAmf0Value *ecma = values->pdata[4];
  g_assert_cmpint (ecma->type, ==, SK_AMF0_ECMA_ARRAY);
  g_assert_cmpfloat (sk_amf0_value_get_number (sk_amf0_object_get (ecma, "w"), 0), ==, 320);
  const SkAmf0Value *strict = values->pdata[5];
  g_assert_cmpint (strict->type, ==, SK_AMF0_STRICT_ARRAY);
  g_assert_cmpuint (strict->items->len, ==, 2);

  /* Re-encoding what we decoded gives the same bytes. */
  g_autoptr (GByteArray) again = g_byte_array_new ();
  for (guint i = 0; i < values->len; i++)
    sk_amf0_write_value (again, values->pdata[i]);
  g_assert_cmpmem (again->data, again->len, b->data, b->len);
}

static void
test_amf0_truncated (void)
{
  g_autoptr (GByteArray) b = sample_command ();
  /* Every proper prefix that cuts a value must be an error, never a crash or a read past. */
  for (gsize len = 0; len < b->len; len++) {
    g_autoptr (GError) error = NULL;
    guint8 *copy = g_memdup2 (b->data, len);
    g_autoptr (GPtrArray) values = sk_amf0_decode_all (copy, len, &error);
    if (values == NULL)
      g_assert_error (error, SK_RTMP_ERROR, SK_RTMP_ERROR_PROTOCOL);
    g_free (copy);
  }
  g_autoptr (GError) error = NULL;
  static const guint8 long_string[] = { 0x0c, 0xff, 0xff, 0xff, 0xff, 'a' };
  g_assert_null (sk_amf0_decode (long_string, sizeof long_string, NULL, &error));
  g_assert_error (error, SK_RTMP_ERROR, SK_RTMP_ERROR_PROTOCOL);
  g_clear_error (&error);
  static const guint8 huge_array[] = { 0x0a, 0xff, 0xff, 0xff, 0xff, 0x05 };
  g_assert_null (sk_amf0_decode (huge_array, sizeof huge_array, NULL, &error));
  g_assert_error (error, SK_RTMP_ERROR, SK_RTMP_ERROR_PROTOCOL);
  g_clear_error (&error);
  static const guint8 bad_marker[] = { 0x11 };
  g_assert_null (sk_amf0_decode (bad_marker, 1, NULL, &error));
  g_assert_error (error, SK_RTMP_ERROR, SK_RTMP_ERROR_PROTOCOL);
}

static void
test_amf0_deep (void)
{
  /* 1000 nested objects {"a": {"a": …}}: refused at the depth limit, not by the stack. */
  g_autoptr (GByteArray) b = g_byte_array_new ();
  static const guint8 open[] = { 0x03, 0, 1, 'a' };
  static const guint8 close[] = { 0, 0, 9 };
  for (int i = 0; i < 1000; i++)
    g_byte_array_append (b, open, sizeof open);
  g_byte_array_append (b, (const guint8 *)"\x05", 1);
  for (int i = 0; i < 1000; i++)
    g_byte_array_append (b, close, sizeof close);
  g_autoptr (GError) error = NULL;
  g_assert_null (sk_amf0_decode (b->data, b->len, NULL, &error));
  g_assert_error (error, SK_RTMP_ERROR, SK_RTMP_ERROR_LIMIT);

  /* At the limit it still works. */
  g_byte_array_set_size (b, 0);
  for (int i = 0; i < SK_AMF0_MAX_DEPTH; i++)
    g_byte_array_append (b, open, sizeof open);
  g_byte_array_append (b, (const guint8 *)"\x05", 1);
  for (int i = 0; i < SK_AMF0_MAX_DEPTH; i++)
    g_byte_array_append (b, close, sizeof close);
  g_autoptr (SkAmf0Value) v = sk_amf0_decode (b->data, b->len, NULL, NULL);
  g_assert_nonnull (v);
}

/* ---- handshake ---- */

static void
hmac (const void *key, gsize key_len, const guint8 *a, gsize a_len, const guint8 *b, gsize b_len,
      guint8 out[32])
{
  g_autoptr (GHmac) h = g_hmac_new (G_CHECKSUM_SHA256, key, key_len);
  gsize len = 32;
  g_hmac_update (h, a, a_len);
  g_hmac_update (h, b, b_len);
  g_hmac_get_digest (h, out, &len);
}

static void
test_handshake_plain (void)
{
  g_autoptr (SkRtmpHandshake) hs = sk_rtmp_handshake_new ();
  g_autoptr (GByteArray) out = g_byte_array_new ();
  guint8 c0c1[1537] = { 3 };
  gsize consumed, needed;
  for (int i = 9; i < 1537; i++)
    c0c1[i] = i * 7;

  /* Nothing is consumed until C0+C1 is whole. */
  g_assert_cmpint (sk_rtmp_handshake_feed (hs, c0c1, 1000, &consumed, &needed, out, NULL), ==,
                   SK_RTMP_PARSE_NEED_MORE);
  g_assert_cmpuint (consumed, ==, 0);
  g_assert_cmpuint (needed, ==, 1537);
  g_assert_cmpuint (out->len, ==, 0);

  g_assert_cmpint (sk_rtmp_handshake_feed (hs, c0c1, 1537, &consumed, &needed, out, NULL), ==,
                   SK_RTMP_PARSE_OK);
  g_assert_cmpuint (consumed, ==, 1537);
  g_assert_cmpuint (out->len, ==, 1 + 2 * 1536);
  g_assert_cmpuint (out->data[0], ==, 3);
  g_assert_false (sk_rtmp_handshake_is_complex (hs));
  g_assert_cmpmem (out->data + 1537, 1536, c0c1 + 1, 1536); /* S2 echoes C1 */

  g_assert_cmpint (sk_rtmp_handshake_feed (hs, out->data + 1, 1535, &consumed, &needed, out, NULL),
                   ==, SK_RTMP_PARSE_NEED_MORE);
  g_assert_cmpint (sk_rtmp_handshake_feed (hs, out->data + 1, 1536, &consumed, &needed, out, NULL),
                   ==, SK_RTMP_PARSE_OK);
  g_assert_true (sk_rtmp_handshake_is_done (hs));

  /* Version 6 (RTMPE) is refused from its first byte. */
  g_autoptr (SkRtmpHandshake) hs2 = sk_rtmp_handshake_new ();
  g_autoptr (GError) error = NULL;
  guint8 v6 = 6;
  g_assert_cmpint (sk_rtmp_handshake_feed (hs2, &v6, 1, &consumed, &needed, out, &error), ==,
                   SK_RTMP_PARSE_ERROR);
  g_assert_error (error, SK_RTMP_ERROR, SK_RTMP_ERROR_PROTOCOL);
}

static const guint8 key_tail[32] = {
  0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57,
  0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
};

static gsize
digest_pos (const guint8 *b, guint scheme)
{
  gsize base = scheme ? 772 : 8;
  return (b[base] + b[base + 1] + b[base + 2] + b[base + 3]) % 728 + base + 4;
}

static void
check_complex (guint scheme)
{
  /* A C1 signed as a Flash player does, in digest scheme @scheme. */
  guint8 c0c1[1537] = { 3 };
  guint8 *c1 = c0c1 + 1;
  for (int i = 0; i < 1536; i++)
    c1[i] = g_random_int ();
  c1[4] = 9, c1[5] = 0, c1[6] = 124, c1[7] = 2;
  gsize pos = digest_pos (c1, scheme);
  hmac ("Genuine Adobe Flash Player 001", 30, c1, pos, c1 + pos + 32, 1536 - pos - 32, c1 + pos);

  g_autoptr (SkRtmpHandshake) hs = sk_rtmp_handshake_new ();
  g_autoptr (GByteArray) out = g_byte_array_new ();
  gsize consumed, needed;
  g_assert_cmpint (sk_rtmp_handshake_feed (hs, c0c1, 1537, &consumed, &needed, out, NULL), ==,
                   SK_RTMP_PARSE_OK);
  g_assert_true (sk_rtmp_handshake_is_complex (hs));

  /* S1 carries a digest with the FMS key in the same scheme. */
  const guint8 *s1 = out->data + 1, *s2 = out->data + 1537;
  gsize spos = digest_pos (s1, scheme);
  guint8 expect[32];
  hmac ("Genuine Adobe Flash Media Server 001", 36, s1, spos, s1 + spos + 32, 1536 - spos - 32,
        expect);
  g_assert_cmpmem (expect, 32, s1 + spos, 32);

  /* S2's last 32 bytes: HMAC keyed with HMAC(full FMS key, C1 digest). */
  guint8 full[68], s2key[32];
  memcpy (full, "Genuine Adobe Flash Media Server 001", 36);
  memcpy (full + 36, key_tail, 32);
  hmac (full, 68, c1 + pos, 32, NULL, 0, s2key);
  hmac (s2key, 32, s2, 1504, NULL, 0, expect);
  g_assert_cmpmem (expect, 32, s2 + 1504, 32);
}

static void
test_handshake_complex (void)
{
  check_complex (0);
  check_complex (1);
}

/* ---- chunk streams ---- */

static SkRtmpMessage *
read_one (SkRtmpChunkReader *r, const guint8 *data, gsize size, gsize *consumed)
{
  SkRtmpMessage *msg = NULL;
  gsize needed;
  g_autoptr (GError) error = NULL;
  g_assert_cmpint (sk_rtmp_chunk_reader_read (r, data, size, consumed, &needed, &msg, &error), ==,
                   SK_RTMP_PARSE_OK);
  g_assert_no_error (error);
  return msg;
}

/* Reads chunks until a message completes; asserts the input is used up exactly. */
static SkRtmpMessage *
read_message (SkRtmpChunkReader *r, GByteArray *in)
{
  gsize off = 0, consumed;
  while (off < in->len) {
    SkRtmpMessage *msg = read_one (r, in->data + off, in->len - off, &consumed);
    off += consumed;
    if (msg != NULL) {
      g_assert_cmpuint (off, ==, in->len);
      return msg;
    }
  }
  g_assert_not_reached ();
}

static void
test_chunk_header_types (void)
{
  g_autoptr (SkRtmpChunkReader) r = sk_rtmp_chunk_reader_new (&limits);
  /* fmt 0, csid 4: ts 1000, len 3, type 9, stream 1 (little endian). */
  static const guint8 fmt0[] = { 0x04, 0, 0x03, 0xe8, 0, 0, 3, 9, 1, 0, 0, 0, 'a', 'b', 'c' };
  /* fmt 1: delta 40, len 2, type 8. */
  static const guint8 fmt1[] = { 0x44, 0, 0, 40, 0, 0, 2, 8, 'd', 'e' };
  /* fmt 2: delta 20. */
  static const guint8 fmt2[] = { 0x84, 0, 0, 20, 'f', 'g' };
  /* fmt 3 starting a new message: same length, type and delta. */
  static const guint8 fmt3[] = { 0xc4, 'h', 'i' };
  gsize consumed;
  g_autoptr (SkRtmpMessage) m0 = read_one (r, fmt0, sizeof fmt0, &consumed);
  g_assert_cmpuint (consumed, ==, sizeof fmt0);
  g_assert_cmpuint (m0->timestamp, ==, 1000);
  g_assert_cmpuint (m0->type_id, ==, 9);
  g_assert_cmpuint (m0->stream_id, ==, 1);
  g_assert_cmpmem (m0->data, m0->size, "abc", 3);
  g_autoptr (SkRtmpMessage) m1 = read_one (r, fmt1, sizeof fmt1, &consumed);
  g_assert_cmpuint (m1->timestamp, ==, 1040);
  g_assert_cmpuint (m1->type_id, ==, 8);
  g_assert_cmpuint (m1->stream_id, ==, 1);
  g_autoptr (SkRtmpMessage) m2 = read_one (r, fmt2, sizeof fmt2, &consumed);
  g_assert_cmpuint (m2->timestamp, ==, 1060);
  g_assert_cmpmem (m2->data, m2->size, "fg", 2);
  g_autoptr (SkRtmpMessage) m3 = read_one (r, fmt3, sizeof fmt3, &consumed);
  g_assert_cmpuint (m3->timestamp, ==, 1080);
  g_assert_cmpuint (m3->type_id, ==, 8);
  g_assert_cmpmem (m3->data, m3->size, "hi", 2);
}

static void
test_chunk_incremental (void)
{
  /* A 300-byte message at chunk size 128 written by our writer, fed byte by byte: nothing is
   * consumed until a chunk is whole, and needed always says how much that chunk takes. */
  g_autoptr (GByteArray) in = g_byte_array_new ();
  guint8 payload[300];
  for (int i = 0; i < 300; i++)
    payload[i] = i;
  sk_rtmp_chunk_write (in, 128, 6, 9, 1, 0x1000, payload, sizeof payload);
  g_assert_cmpuint (in->len, ==, 12 + 300 + 2);

  g_autoptr (SkRtmpChunkReader) r = sk_rtmp_chunk_reader_new (&limits);
  g_autoptr (SkRtmpMessage) msg = NULL;
  gsize off = 0;
  guint chunks = 0;
  for (gsize avail = 1; off < in->len; avail++) {
    gsize consumed, needed;
    SkRtmpMessage *m = NULL;
    SkRtmpParseStatus st
        = sk_rtmp_chunk_reader_read (r, in->data + off, avail - off, &consumed, &needed, &m, NULL);
    if (st == SK_RTMP_PARSE_NEED_MORE) {
      g_assert_cmpuint (consumed, ==, 0);
      g_assert_cmpuint (needed, >, avail - off);
      continue;
    }
    g_assert_cmpint (st, ==, SK_RTMP_PARSE_OK);
    g_assert_cmpuint (consumed, ==, avail - off); /* exactly when it became whole */
    off += consumed;
    chunks++;
    if (m != NULL)
      msg = m;
  }
  g_assert_cmpuint (chunks, ==, 3);
  g_assert_nonnull (msg);
  g_assert_cmpuint (msg->timestamp, ==, 0x1000);
  g_assert_cmpmem (msg->data, msg->size, payload, sizeof payload);
}

static void
test_chunk_extended_timestamp (void)
{
  /* Timestamp 0x01000000 needs the extended field; the type 3 continuation repeats it, as
   * librtmp/OBS/ffmpeg send it. */
  g_autoptr (GByteArray) in = g_byte_array_new ();
  guint8 payload[200] = { 0 };
  sk_rtmp_chunk_write (in, 128, 4, 8, 1, 0x01000000, payload, sizeof payload);
  g_assert_cmpuint (in->len, ==, 12 + 4 + 128 + 1 + 4 + 72);
  g_autoptr (SkRtmpChunkReader) r = sk_rtmp_chunk_reader_new (&limits);
  g_autoptr (SkRtmpMessage) msg = read_message (r, in);
  g_assert_cmpuint (msg->timestamp, ==, 0x01000000);
  g_assert_cmpuint (msg->size, ==, 200);

  /* A type 1 with an extended delta, then a type 3 new message repeating it. */
  static const guint8 fmt1[] = { 0x44, 0xff, 0xff, 0xff, 0, 0, 1, 8, 0, 0, 0, 0x10, 'x' };
  static const guint8 fmt3[] = { 0xc4, 0, 0, 0, 0x10, 'y' };
  gsize consumed;
  g_autoptr (SkRtmpMessage) m1 = read_one (r, fmt1, sizeof fmt1, &consumed);
  g_assert_cmpuint (m1->timestamp, ==, 0x01000010);
  g_autoptr (SkRtmpMessage) m2 = read_one (r, fmt3, sizeof fmt3, &consumed);
  g_assert_cmpuint (consumed, ==, sizeof fmt3);
  g_assert_cmpuint (m2->timestamp, ==, 0x01000020);
}

static void
test_chunk_csid_forms (void)
{
  g_autoptr (SkRtmpChunkReader) r = sk_rtmp_chunk_reader_new (&limits);
  guint32 csids[] = { 2, 63, 64, 319, 320, 65599 };
  for (guint i = 0; i < G_N_ELEMENTS (csids); i++) {
    g_autoptr (GByteArray) in = g_byte_array_new ();
    sk_rtmp_chunk_write (in, 128, csids[i], 20, 0, i, (const guint8 *)"zz", 2);
    g_autoptr (SkRtmpMessage) msg = read_message (r, in);
    g_assert_cmpuint (msg->csid, ==, csids[i]);
    g_assert_cmpuint (msg->timestamp, ==, i);
  }
}

static void
test_chunk_interleaved_and_abort (void)
{
  /* Two messages on csid 4 and 6, chunks alternating; then an Abort drops a partial one. */
  g_autoptr (GByteArray) a = g_byte_array_new (), b = g_byte_array_new ();
  guint8 pa[200], pb[200];
  memset (pa, 'a', sizeof pa);
  memset (pb, 'b', sizeof pb);
  sk_rtmp_chunk_write (a, 128, 4, 8, 1, 10, pa, sizeof pa); /* chunks: 12+128, 1+72 */
  sk_rtmp_chunk_write (b, 128, 6, 9, 1, 20, pb, sizeof pb);
  g_autoptr (GByteArray) in = g_byte_array_new ();
  g_byte_array_append (in, a->data, 140);
  g_byte_array_append (in, b->data, 140);
  g_byte_array_append (in, a->data + 140, a->len - 140);
  g_byte_array_append (in, b->data + 140, b->len - 140);

  g_autoptr (SkRtmpChunkReader) r = sk_rtmp_chunk_reader_new (&limits);
  gsize off = 0, consumed;
  GPtrArray *got = g_ptr_array_new_with_free_func ((GDestroyNotify)sk_rtmp_message_free);
  while (off < in->len) {
    SkRtmpMessage *m = read_one (r, in->data + off, in->len - off, &consumed);
    off += consumed;
    if (m != NULL)
      g_ptr_array_add (got, m);
  }
  g_assert_cmpuint (got->len, ==, 2);
  SkRtmpMessage *ma = got->pdata[0], *mb = got->pdata[1];
  g_assert_cmpmem (ma->data, ma->size, pa, sizeof pa);
  g_assert_cmpmem (mb->data, mb->size, pb, sizeof pb);
  g_assert_cmpuint (mb->timestamp, ==, 20);
  g_ptr_array_unref (got);

  /* First chunk of a new message on csid 4, then Abort(4), then a fresh fmt 1 message there. */
  g_autoptr (GByteArray) c = g_byte_array_new ();
  sk_rtmp_chunk_write (c, 128, 4, 8, 1, 30, pa, sizeof pa);
  g_assert_null (read_one (r, c->data, 140, &consumed));
  static const guint8 abort_msg[] = { 0x02, 0, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 0, 0, 0, 4 };
  g_assert_null (read_one (r, abort_msg, sizeof abort_msg, &consumed));
  static const guint8 fresh[] = { 0x44, 0, 0, 5, 0, 0, 1, 8, 'q' };
  g_autoptr (SkRtmpMessage) m = read_one (r, fresh, sizeof fresh, &consumed);
  g_assert_nonnull (m);
  g_assert_cmpmem (m->data, m->size, "q", 1);
}

static void
expect_error (SkRtmpChunkReader *r, const guint8 *data, gsize size, gint code)
{
  gsize consumed, needed;
  SkRtmpMessage *msg = NULL;
  g_autoptr (GError) error = NULL;
  g_assert_cmpint (sk_rtmp_chunk_reader_read (r, data, size, &consumed, &needed, &msg, &error), ==,
                   SK_RTMP_PARSE_ERROR);
  g_assert_error (error, SK_RTMP_ERROR, code);
  g_assert_null (msg);
}

static void
test_chunk_set_chunk_size (void)
{
  guint8 scs[] = { 0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0 };
  gsize consumed;

  /* 0, 2^31 and above the limit are all refused. */
  guint32 bad[] = { 0, 0x80000000u, 65537 };
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    g_autoptr (SkRtmpChunkReader) r = sk_rtmp_chunk_reader_new (&limits);
    scs[12] = bad[i] >> 24, scs[13] = bad[i] >> 16, scs[14] = bad[i] >> 8, scs[15] = bad[i];
    expect_error (r, scs, sizeof scs, SK_RTMP_ERROR_LIMIT);
  }

  /* 4096 is applied: a 4000-byte message then comes in one chunk. */
  g_autoptr (SkRtmpChunkReader) r = sk_rtmp_chunk_reader_new (&limits);
  scs[12] = 0, scs[13] = 0, scs[14] = 0x10, scs[15] = 0;
  g_assert_null (read_one (r, scs, sizeof scs, &consumed));
  g_assert_cmpuint (sk_rtmp_chunk_reader_get_chunk_size (r), ==, 4096);
  g_autoptr (GByteArray) in = g_byte_array_new ();
  guint8 *big = g_malloc0 (4000);
  sk_rtmp_chunk_write (in, 4096, 6, 9, 1, 0, big, 4000);
  g_free (big);
  g_autoptr (SkRtmpMessage) msg = read_one (r, in->data, in->len, &consumed);
  g_assert_nonnull (msg);
  g_assert_cmpuint (consumed, ==, in->len);
}

static void
test_chunk_limits (void)
{
  /* A 16 MiB message header is refused from its header alone, before any payload. */
  g_autoptr (SkRtmpChunkReader) r = sk_rtmp_chunk_reader_new (&limits);
  static const guint8 huge[] = { 0x06, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0 };
  expect_error (r, huge, sizeof huge, SK_RTMP_ERROR_LIMIT);

  /* Distinct chunk streams beyond the limit (8 here). */
  g_autoptr (SkRtmpChunkReader) r2 = sk_rtmp_chunk_reader_new (&limits);
  for (guint csid = 3; csid < 3 + limits.max_chunk_streams; csid++) {
    g_autoptr (GByteArray) in = g_byte_array_new ();
    sk_rtmp_chunk_write (in, 128, csid, 20, 0, 0, (const guint8 *)"x", 1);
    g_autoptr (SkRtmpMessage) m = read_message (r2, in);
    g_assert_nonnull (m);
  }
  g_autoptr (GByteArray) in = g_byte_array_new ();
  sk_rtmp_chunk_write (in, 128, 1000, 20, 0, 0, (const guint8 *)"x", 1);
  expect_error (r2, in->data, in->len, SK_RTMP_ERROR_LIMIT);

  /* Type 3 cannot open a chunk stream. */
  static const guint8 orphan[] = { 0xc7, 'x' };
  g_autoptr (SkRtmpChunkReader) r3 = sk_rtmp_chunk_reader_new (&limits);
  expect_error (r3, orphan, sizeof orphan, SK_RTMP_ERROR_PROTOCOL);
}

/* ---- one connection's command logic ---- */

typedef struct {
  char *key;
  guint n_media;
  gboolean unpublished;
} Calls;

static gboolean
cb_publish (gpointer user_data, const char *app, const char *key, GError **error)
{
  Calls *calls = user_data;
  calls->key = g_strdup (key);
  if (g_str_equal (key, "bad")) {
    g_set_error_literal (error, SK_RTMP_ERROR, SK_RTMP_ERROR_BAD_NAME, "Unknown stream key.");
    return FALSE;
  }
  return TRUE;
}

static gboolean
cb_media (gpointer user_data, guint8 tag, guint32 ts, const guint8 *d, gsize n, GError **error)
{
  ((Calls *)user_data)->n_media++;
  return TRUE;
}

static void
cb_unpublish (gpointer user_data)
{
  ((Calls *)user_data)->unpublished = TRUE;
}

static const SkRtmpConnectionCallbacks test_callbacks = { cb_publish, cb_media, cb_unpublish };

static void
add_command (GByteArray *in, const char *name, double txid, const char *arg)
{
  g_autoptr (GByteArray) body = g_byte_array_new ();
  sk_amf0_write_string (body, name);
  sk_amf0_write_number (body, txid);
  if (g_str_equal (name, "connect")) {
    g_autoptr (SkAmf0Value) obj = sk_amf0_value_new_object ();
    sk_amf0_object_append (obj, "app", sk_amf0_value_new_string ("live"));
    sk_amf0_write_value (body, obj);
  } else {
    sk_amf0_write_null (body);
  }
  if (arg != NULL)
    sk_amf0_write_string (body, arg);
  sk_rtmp_chunk_write (in, 128, 3, 20, g_str_equal (name, "publish") ? 1 : 0, 0, body->data,
                       body->len);
}

static gboolean
output_contains (SkRtmpConnection *conn, const char *text)
{
  GByteArray *out = sk_rtmp_connection_get_output (conn);
  gsize n = strlen (text);
  for (gsize i = 0; i + n <= out->len; i++) {
    if (memcmp (out->data + i, text, n) == 0)
      return TRUE;
  }
  return FALSE;
}

static SkRtmpConnection *
publish_session (const char *name, Calls *calls)
{
  SkRtmpConnection *conn = sk_rtmp_connection_new (&limits, &test_callbacks, calls);
  g_autoptr (GByteArray) in = g_byte_array_new ();
  guint8 hs[1537 + 1536] = { 3 };
  g_byte_array_append (in, hs, sizeof hs);
  add_command (in, "connect", 1, NULL);
  add_command (in, "createStream", 2, NULL);
  add_command (in, "publish", 3, name);
  static const guint8 video[] = { 0x06, 0, 0, 0, 0, 0, 2, 9, 1, 0, 0, 0, 0x17, 0 };
  g_byte_array_append (in, video, sizeof video);

  gsize consumed, needed;
  g_autoptr (GError) error = NULL;
  g_assert_true (sk_rtmp_connection_feed (conn, in->data, in->len, &consumed, &needed, &error));
  g_assert_no_error (error);
  return conn;
}

static void
test_connection_publish (void)
{
  Calls calls = { 0 };
  g_autoptr (SkRtmpConnection) conn = publish_session ("goodkey?token=1", &calls);
  g_assert_cmpstr (calls.key, ==, "goodkey");
  g_assert_cmpint (sk_rtmp_connection_get_state (conn), ==, SK_RTMP_CONNECTION_PUBLISHING);
  g_assert_cmpuint (calls.n_media, ==, 1);
  g_assert_true (output_contains (conn, "NetConnection.Connect.Success"));
  g_assert_true (output_contains (conn, "NetStream.Publish.Start"));

  g_autoptr (GByteArray) in = g_byte_array_new ();
  add_command (in, "FCUnpublish", 4, "goodkey");
  gsize consumed, needed;
  g_assert_true (sk_rtmp_connection_feed (conn, in->data, in->len, &consumed, &needed, NULL));
  g_assert_true (calls.unpublished);
  g_free (calls.key);
}

static void
test_connection_control (void)
{
  Calls calls = { 0 };
  g_autoptr (SkRtmpConnection) conn = publish_session ("goodkey", &calls);
  GByteArray *out = sk_rtmp_connection_get_output (conn);
  g_byte_array_set_size (out, 0);

  /* Window Acknowledgement Size 200, then 220 bytes of audio: one Acknowledgement. */
  g_autoptr (GByteArray) in = g_byte_array_new ();
  static const guint8 was[] = { 0x02, 0, 0, 0, 0, 0, 4, 5, 0, 0, 0, 0, 0, 0, 0, 200 };
  g_byte_array_append (in, was, sizeof was);
  guint8 audio[200] = { 0xaf, 1 };
  sk_rtmp_chunk_write (in, 128, 4, 8, 1, 10, audio, sizeof audio);
  gsize consumed, needed;
  g_assert_true (sk_rtmp_connection_feed (conn, in->data, in->len, &consumed, &needed, NULL));
  g_assert_cmpuint (consumed, ==, in->len);
  /* Our chunk size is 4096 now; parse our own output with a reader that knows it. */
  g_autoptr (SkRtmpChunkReader) r = sk_rtmp_chunk_reader_new (&limits);
  static const guint8 scs[] = { 0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0x10, 0 };
  g_assert_null (read_one (r, scs, sizeof scs, &consumed));
  g_autoptr (SkRtmpMessage) ack = read_one (r, out->data, out->len, &consumed);
  g_assert_cmpuint (ack->type_id, ==, SK_RTMP_MSG_ACK);
  g_assert_cmpuint (ack->size, ==, 4);
  g_byte_array_set_size (out, 0);

  /* PingRequest(1234) → PingResponse(1234). */
  g_byte_array_set_size (in, 0);
  static const guint8 ping[] = { 0x02, 0, 0, 0, 0, 0, 6, 4, 0, 0, 0, 0, 0, 6, 0, 0, 0x04, 0xd2 };
  g_byte_array_append (in, ping, sizeof ping);
  g_assert_true (sk_rtmp_connection_feed (conn, in->data, in->len, &consumed, &needed, NULL));
  g_autoptr (SkRtmpMessage) pong = read_one (r, out->data, out->len, &consumed);
  g_assert_cmpuint (pong->type_id, ==, SK_RTMP_MSG_USER_CONTROL);
  static const guint8 expect[] = { 0, 7, 0, 0, 0x04, 0xd2 };
  g_assert_cmpmem (pong->data, pong->size, expect, sizeof expect);
  g_free (calls.key);
}

static void
test_connection_bad_name (void)
{
  Calls calls = { 0 };
  g_autoptr (SkRtmpConnection) conn = publish_session ("bad", &calls);
  g_assert_cmpint (sk_rtmp_connection_get_state (conn), ==, SK_RTMP_CONNECTION_CLOSING);
  g_assert_true (output_contains (conn, "NetStream.Publish.BadName"));
  g_assert_cmpuint (calls.n_media, ==, 0); /* nothing handled after the refusal */
  g_free (calls.key);
}

/* Before a key is accepted only small messages are buffered; media sizes once publishing. */
static void
test_connection_limit_before_publish (void)
{
  Calls calls = { 0 };
  g_autoptr (SkRtmpConnection) conn = sk_rtmp_connection_new (&limits, &test_callbacks, &calls);
  g_autoptr (GByteArray) in = g_byte_array_new ();
  guint8 hs[1537 + 1536] = { 3 };
  g_byte_array_append (in, hs, sizeof hs);
  add_command (in, "connect", 1, NULL);
  /* A 1 MiB command (well under the 8 MiB media limit) announced by its header alone. */
  static const guint8 big[] = { 0x03, 0, 0, 0, 0x10, 0, 0, 20, 0, 0, 0, 0 };
  g_byte_array_append (in, big, sizeof big);
  gsize consumed, needed;
  g_autoptr (GError) error = NULL;
  g_assert_false (sk_rtmp_connection_feed (conn, in->data, in->len, &consumed, &needed, &error));
  g_assert_error (error, SK_RTMP_ERROR, SK_RTMP_ERROR_LIMIT);

  /* The same announcement for video once publishing waits for its payload. */
  g_autoptr (SkRtmpConnection) pub = publish_session ("goodkey", &calls);
  static const guint8 frame[] = { 0x06, 0, 0, 0, 0x10, 0, 0, 9, 1, 0, 0, 0 };
  g_assert_true (sk_rtmp_connection_feed (pub, frame, sizeof frame, &consumed, &needed, NULL));
  g_assert_cmpuint (needed, >, sizeof frame);
  g_free (calls.key);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/rtmp/amf0/roundtrip", test_amf0_roundtrip);
  g_test_add_func ("/rtmp/amf0/truncated", test_amf0_truncated);
  g_test_add_func ("/rtmp/amf0/deep", test_amf0_deep);
  g_test_add_func ("/rtmp/handshake/plain", test_handshake_plain);
  g_test_add_func ("/rtmp/handshake/complex", test_handshake_complex);
  g_test_add_func ("/rtmp/chunk/header-types", test_chunk_header_types);
  g_test_add_func ("/rtmp/chunk/incremental", test_chunk_incremental);
  g_test_add_func ("/rtmp/chunk/extended-timestamp", test_chunk_extended_timestamp);
  g_test_add_func ("/rtmp/chunk/csid-forms", test_chunk_csid_forms);
  g_test_add_func ("/rtmp/chunk/interleaved-abort", test_chunk_interleaved_and_abort);
  g_test_add_func ("/rtmp/chunk/set-chunk-size", test_chunk_set_chunk_size);
  g_test_add_func ("/rtmp/chunk/limits", test_chunk_limits);
  g_test_add_func ("/rtmp/connection/publish", test_connection_publish);
  g_test_add_func ("/rtmp/connection/control", test_connection_control);
  g_test_add_func ("/rtmp/connection/bad-name", test_connection_bad_name);
  g_test_add_func ("/rtmp/connection/limit-before-publish", test_connection_limit_before_publish);
  return g_test_run ();
}
