/* streamkeeper: RTMP chunk stream reader and writer (see sk-rtmp-chunk.h). */
#include "sk-rtmp-chunk.h"

#include <string.h>

#include "sk-amf0.h"

/* Largest chunk header: 3-byte basic header, type 0 message header, extended timestamp. */
#define MAX_HEADER_LEN (3 + 11 + 4)
#define TIMESTAMP_EXTENDED 0xFFFFFF

typedef struct {
  guint32 timestamp; /* absolute timestamp of the current (or last) message */
  guint32 delta;     /* timestamp field of the last type 0/1/2 header (ffmpeg's reading) */
  guint32 length;
  guint8 type_id;
  guint32 stream_id;
  gboolean extended;   /* the last type 0/1/2 header used an extended timestamp */
  GByteArray *partial; /* message being assembled; NULL between messages */
} ChunkStream;

struct _SkRtmpChunkReader {
  SkRtmpChunkLimits limits;
  guint chunk_size;
  GHashTable *streams; /* csid → ChunkStream */
  gsize pending;       /* bytes held in partial messages across all chunk streams */
};

void
sk_rtmp_message_free (SkRtmpMessage *msg)
{
  if (msg == NULL)
    return;
  g_free (msg->data);
  g_free (msg);
}

static void
chunk_stream_free (ChunkStream *cs)
{
  if (cs->partial != NULL)
    g_byte_array_unref (cs->partial);
  g_free (cs);
}

SkRtmpChunkReader *
sk_rtmp_chunk_reader_new (const SkRtmpChunkLimits *limits)
{
  SkRtmpChunkReader *self = g_new0 (SkRtmpChunkReader, 1);
  self->limits = *limits;
  self->chunk_size = SK_RTMP_DEFAULT_CHUNK_SIZE;
  self->streams = g_hash_table_new_full (NULL, NULL, NULL, (GDestroyNotify)chunk_stream_free);
  return self;
}

void
sk_rtmp_chunk_reader_free (SkRtmpChunkReader *self)
{
  if (self == NULL)
    return;
  g_hash_table_unref (self->streams);
  g_free (self);
}

guint
sk_rtmp_chunk_reader_get_chunk_size (SkRtmpChunkReader *self)
{
  return self->chunk_size;
}

void
sk_rtmp_chunk_reader_set_max_message_size (SkRtmpChunkReader *self, guint max_message_size)
{
  self->limits.max_message_size = max_message_size;
}

gsize
sk_rtmp_chunk_reader_max_chunk_bytes (SkRtmpChunkReader *self)
{
  return MAX_HEADER_LEN + MAX (self->limits.max_chunk_size, self->chunk_size);
}

static guint32
be24 (const guint8 *p)
{
  return (guint32)p[0] << 16 | (guint32)p[1] << 8 | p[2];
}

static guint32
be32 (const guint8 *p)
{
  return (guint32)p[0] << 24 | (guint32)p[1] << 16 | (guint32)p[2] << 8 | p[3];
}

static guint32
le32 (const guint8 *p)
{
  return (guint32)p[3] << 24 | (guint32)p[2] << 16 | (guint32)p[1] << 8 | p[0];
}

static SkRtmpParseStatus protocol_error (GError **error, SkRtmpError code, const char *format, ...)
    G_GNUC_PRINTF (3, 4);

static SkRtmpParseStatus
protocol_error (GError **error, SkRtmpError code, const char *format, ...)
{
  va_list args;
  va_start (args, format);
  g_autofree char *msg = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error_literal (error, SK_RTMP_ERROR, code, msg);
  return SK_RTMP_PARSE_ERROR;
}

/* Set Chunk Size and Abort belong to the chunk layer: applied here, never handed up. */
static SkRtmpParseStatus
apply_control (SkRtmpChunkReader *self, const SkRtmpMessage *msg, GError **error)
{
  if (msg->size < 4)
    return protocol_error (error, SK_RTMP_ERROR_PROTOCOL, "control message %u too short",
                           msg->type_id);
  guint32 value = be32 (msg->data);
  if (msg->type_id == SK_RTMP_MSG_SET_CHUNK_SIZE) {
    if (value == 0 || (value & 0x80000000u) || value > self->limits.max_chunk_size)
      return protocol_error (error, SK_RTMP_ERROR_LIMIT,
                             "Set Chunk Size %u refused (allowed 1..%u)", value,
                             self->limits.max_chunk_size);
    self->chunk_size = value;
  } else {
    ChunkStream *cs = g_hash_table_lookup (self->streams, GUINT_TO_POINTER (value));
    if (cs != NULL && cs->partial != NULL) {
      self->pending -= cs->partial->len;
      g_clear_pointer (&cs->partial, g_byte_array_unref);
    }
  }
  return SK_RTMP_PARSE_OK;
}

static SkRtmpParseStatus
need_more (gsize *needed, gsize n)
{
  *needed = n;
  return SK_RTMP_PARSE_NEED_MORE;
}

SkRtmpParseStatus
sk_rtmp_chunk_reader_read (SkRtmpChunkReader *self, const guint8 *data, gsize size, gsize *consumed,
                           gsize *needed, SkRtmpMessage **msg, GError **error)
{
  static const guint8 message_header_len[4] = { 11, 7, 3, 0 };

  *consumed = 0;
  *needed = 0;
  *msg = NULL;

  /* Basic header: 1, 2 or 3 bytes. */
  gsize hlen = 1;
  if (size < hlen)
    return need_more (needed, hlen);
  guint fmt = data[0] >> 6;
  guint32 csid = data[0] & 0x3f;
  if (csid == 0)
    hlen = 2;
  else if (csid == 1)
    hlen = 3;
  if (size < hlen)
    return need_more (needed, hlen);
  if (csid == 0)
    csid = 64 + data[1];
  else if (csid == 1)
    csid = 64 + data[1] + 256u * data[2];

  ChunkStream *cs = g_hash_table_lookup (self->streams, GUINT_TO_POINTER (csid));
  if (cs == NULL) {
    if (fmt == 3)
      return protocol_error (error, SK_RTMP_ERROR_PROTOCOL, "type 3 chunk opens chunk stream %u",
                             csid);
    if (g_hash_table_size (self->streams) >= self->limits.max_chunk_streams)
      return protocol_error (error, SK_RTMP_ERROR_LIMIT,
                             "chunk stream %u exceeds the limit of %u chunk streams", csid,
                             self->limits.max_chunk_streams);
  }

  /* Message header: start from what the chunk stream had, override what this type carries. */
  const guint8 *p = data + hlen;
  hlen += message_header_len[fmt];
  if (size < hlen)
    return need_more (needed, hlen);
  ChunkStream next = { 0 };
  if (cs != NULL)
    next = *cs;
  guint32 ts_field = 0;
  gboolean extended;
  if (fmt <= 2) {
    ts_field = be24 (p);
    extended = ts_field == TIMESTAMP_EXTENDED;
    if (fmt <= 1) {
      next.length = be24 (p + 3);
      next.type_id = p[6];
    }
    if (fmt == 0)
      next.stream_id = le32 (p + 7);
  } else {
    /* librtmp, OBS and ffmpeg repeat the extended timestamp on type 3 chunks. */
    extended = next.extended;
  }
  if (extended) {
    hlen += 4;
    if (size < hlen)
      return need_more (needed, hlen);
    ts_field = be32 (data + hlen - 4);
  }

  gboolean starts_message = next.partial == NULL;
  if (!starts_message && fmt != 3)
    return protocol_error (error, SK_RTMP_ERROR_PROTOCOL,
                           "type %u chunk interrupts a message on chunk stream %u", fmt, csid);
  if (starts_message && next.length > self->limits.max_message_size)
    return protocol_error (error, SK_RTMP_ERROR_LIMIT,
                           "message of %u bytes exceeds the limit of %u", next.length,
                           self->limits.max_message_size);

  gsize have = starts_message ? 0 : next.partial->len;
  gsize n = MIN (next.length - have, self->chunk_size);
  if (size < hlen + n)
    return need_more (needed, hlen + n);
  /* Interleaved partial messages share one budget: twice the largest message. */
  if (self->pending + n > 2 * (gsize)self->limits.max_message_size)
    return protocol_error (error, SK_RTMP_ERROR_LIMIT, "too many bytes in partial messages");

  /* The chunk is whole: commit. */
  if (cs == NULL) {
    cs = g_new0 (ChunkStream, 1);
    g_hash_table_insert (self->streams, GUINT_TO_POINTER (csid), cs);
  }
  if (fmt <= 2)
    next.extended = extended;
  if (starts_message) {
    if (fmt == 0) {
      next.timestamp = ts_field;
      next.delta = ts_field;
    } else if (fmt <= 2) {
      next.timestamp += ts_field;
      next.delta = ts_field;
    } else {
      next.timestamp += extended ? ts_field : next.delta;
    }
    next.partial = g_byte_array_sized_new (MIN (next.length, 4096u));
  }
  *cs = next;
  g_byte_array_append (cs->partial, data + hlen, n);
  self->pending += n;
  *consumed = hlen + n;

  if (cs->partial->len < cs->length)
    return SK_RTMP_PARSE_OK;

  g_autoptr (SkRtmpMessage) m = g_new0 (SkRtmpMessage, 1);
  m->csid = csid;
  m->timestamp = cs->timestamp;
  m->type_id = cs->type_id;
  m->stream_id = cs->stream_id;
  m->size = cs->partial->len;
  m->data = g_byte_array_free (g_steal_pointer (&cs->partial), FALSE);
  if (m->data == NULL) /* an empty message: callers may still do pointer arithmetic on it */
    m->data = g_malloc0 (1);
  self->pending -= m->size;

  if (m->type_id == SK_RTMP_MSG_SET_CHUNK_SIZE || m->type_id == SK_RTMP_MSG_ABORT)
    return apply_control (self, m, error);
  *msg = g_steal_pointer (&m);
  return SK_RTMP_PARSE_OK;
}

static void
write_basic_header (GByteArray *out, guint fmt, guint32 csid)
{
  guint8 b[3];
  if (csid < 64) {
    b[0] = fmt << 6 | csid;
    g_byte_array_append (out, b, 1);
  } else if (csid < 64 + 256) {
    b[0] = fmt << 6;
    b[1] = csid - 64;
    g_byte_array_append (out, b, 2);
  } else {
    b[0] = fmt << 6 | 1;
    b[1] = (csid - 64) & 0xff;
    b[2] = (csid - 64) >> 8;
    g_byte_array_append (out, b, 3);
  }
}

static void
write_ext_timestamp (GByteArray *out, guint32 timestamp)
{
  guint8 b[4] = { timestamp >> 24, timestamp >> 16, timestamp >> 8, timestamp };
  g_byte_array_append (out, b, 4);
}

void
sk_rtmp_chunk_write (GByteArray *out, guint chunk_size, guint32 csid, guint8 type_id,
                     guint32 stream_id, guint32 timestamp, const guint8 *payload, gsize size)
{
  g_return_if_fail (chunk_size > 0 && csid >= 2 && csid <= SK_RTMP_MAX_CSID);
  g_return_if_fail (size <= 0xFFFFFF);

  gboolean extended = timestamp >= TIMESTAMP_EXTENDED;
  guint32 ts_field = extended ? TIMESTAMP_EXTENDED : timestamp;
  guint8 h[11] = {
    ts_field >> 16, ts_field >> 8, ts_field,       size >> 16,      size >> 8,       size,
    type_id,        stream_id,     stream_id >> 8, stream_id >> 16, stream_id >> 24,
  };

  write_basic_header (out, 0, csid);
  g_byte_array_append (out, h, sizeof h);
  if (extended)
    write_ext_timestamp (out, timestamp);

  gsize off = 0;
  do {
    gsize n = MIN (size - off, chunk_size);
    if (off > 0) {
      write_basic_header (out, 3, csid);
      if (extended)
        write_ext_timestamp (out, timestamp);
    }
    g_byte_array_append (out, payload + off, n);
    off += n;
  } while (off < size);
}
