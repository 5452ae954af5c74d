/*
 * streamkeeper: RTMP chunk streams.
 *
 * The reader is incremental: it looks at the front of the input, consumes one chunk only once
 * it is whole (header and payload), and otherwise says how many bytes that chunk needs. It
 * applies Set Chunk Size and Abort Message itself. All limits are checked before anything is
 * allocated: chunk size, message size, distinct chunk streams and bytes buffered for partial
 * messages across all chunk streams.
 */
#pragma once

#include "sk-rtmp-messages.h"

G_BEGIN_DECLS

typedef struct {
  guint32 csid;
  guint32 timestamp; /* absolute, ms, wraps at 2^32 */
  guint8 type_id;
  guint32 stream_id;
  guint8 *data;
  gsize size;
} SkRtmpMessage;

void sk_rtmp_message_free (SkRtmpMessage *msg);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkRtmpMessage, sk_rtmp_message_free)

typedef struct {
  guint max_chunk_size;    /* a Set Chunk Size above this is a protocol error */
  guint max_message_size;  /* a message header announcing more is refused */
  guint max_chunk_streams; /* distinct csids per connection */
} SkRtmpChunkLimits;

typedef struct _SkRtmpChunkReader SkRtmpChunkReader;

SkRtmpChunkReader *sk_rtmp_chunk_reader_new (const SkRtmpChunkLimits *limits);
void sk_rtmp_chunk_reader_free (SkRtmpChunkReader *self);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkRtmpChunkReader, sk_rtmp_chunk_reader_free)

/*
 * Reads at most one chunk from the front of @data.
 * OK: *@consumed bytes (one chunk) were used; *@msg is set (caller frees) if that chunk completed
 *   a message other than Set Chunk Size / Abort, else NULL.
 * NEED_MORE: nothing consumed; *@needed is how many bytes the chunk needs in total (> @size).
 * ERROR: protocol error or limit; the connection must be closed.
 */
SkRtmpParseStatus sk_rtmp_chunk_reader_read (SkRtmpChunkReader *self, const guint8 *data,
                                             gsize size, gsize *consumed, gsize *needed,
                                             SkRtmpMessage **msg, GError **error);

guint sk_rtmp_chunk_reader_get_chunk_size (SkRtmpChunkReader *self);

/* Changes limits.max_message_size for messages that start from now on. */
void sk_rtmp_chunk_reader_set_max_message_size (SkRtmpChunkReader *self, guint max_message_size);

/* The most bytes one chunk can take with the current limits (header + max chunk size). */
gsize sk_rtmp_chunk_reader_max_chunk_bytes (SkRtmpChunkReader *self);

/*
 * Appends @size bytes of payload as one message in chunks of @chunk_size: a type 0 header,
 * then type 3 continuations (repeating the extended timestamp when there is one, as librtmp
 * and ffmpeg expect).
 */
void sk_rtmp_chunk_write (GByteArray *out, guint chunk_size, guint32 csid, guint8 type_id,
                          guint32 stream_id, guint32 timestamp, const guint8 *payload, gsize size);

G_END_DECLS
