/*
 * streamkeeper: one RTMP connection's protocol logic, without sockets.
 *
 * Bytes from the peer go in (sk_rtmp_connection_feed), bytes for the peer accumulate in the
 * output buffer, and what matters to the rest of streamkeeper comes out through a small
 * callback table: publish (with the stream key), media messages as FLV tags, and a clean
 * unpublish. The server wires the callbacks to the ingress registry; tests and fuzzers can
 * wire them to anything.
 */
#pragma once

#include "sk-amf0.h"
#include "sk-rtmp-chunk.h"

G_BEGIN_DECLS

typedef struct _SkRtmpConnection SkRtmpConnection;

typedef struct {
  /* `publish` with @stream_key (query string removed). FALSE + an SK_RTMP_ERROR_BAD_NAME or
   * SK_RTMP_ERROR_REJECTED error refuses it; the error message is sent as the description.
   * FALSE + SK_RTMP_ERROR_PENDING defers the answer: the connection reads nothing more
   * (PUBLISH_WAIT) until sk_rtmp_connection_answer_publish. */
  gboolean (*publish) (gpointer user_data, const char *app, const char *stream_key, GError **error);
  /* An audio (8), video (9) or script-data (18) message while publishing. FALSE + error stops
   * feeding; the caller closes. */
  gboolean (*media) (gpointer user_data, guint8 tag_type, guint32 timestamp, const guint8 *data,
                     gsize size, GError **error);
  /* FCUnpublish, deleteStream or closeStream while publishing: a clean end. */
  void (*unpublish) (gpointer user_data);
} SkRtmpConnectionCallbacks;

typedef enum {
  SK_RTMP_CONNECTION_HANDSHAKE,  /* waiting for C0 C1 / C2 */
  SK_RTMP_CONNECTION_CONNECTING, /* handshake done, waiting for `connect` */
  SK_RTMP_CONNECTION_CONNECTED,  /* `connect` answered; not publishing */
  SK_RTMP_CONNECTION_PUBLISHING,
  SK_RTMP_CONNECTION_CLOSING,      /* refused something: flush the output, then close */
  SK_RTMP_CONNECTION_PUBLISH_WAIT, /* `publish` deferred: waiting for its answer */
} SkRtmpConnectionState;

SkRtmpConnection *sk_rtmp_connection_new (const SkRtmpChunkLimits *limits,
                                          const SkRtmpConnectionCallbacks *callbacks,
                                          gpointer user_data);
void sk_rtmp_connection_free (SkRtmpConnection *self);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkRtmpConnection, sk_rtmp_connection_free)

/*
 * Handles every whole unit (handshake packet, chunk) at the front of @data and stores how many
 * bytes that was in *@consumed. *@needed is how many bytes the next unit needs in total (0 once
 * CLOSING). FALSE + error: protocol error or a callback failed; close the connection.
 */
gboolean sk_rtmp_connection_feed (SkRtmpConnection *self, const guint8 *data, gsize size,
                                  gsize *consumed, gsize *needed, GError **error);

/* Answers a deferred `publish` (PUBLISH_WAIT): NULL @refusal accepts it (PUBLISHING), else
 * the refusal is sent as publish's would have been (CLOSING). Then feed what was left. */
void sk_rtmp_connection_answer_publish (SkRtmpConnection *self, const GError *refusal);

/* Bytes waiting to be sent; the caller removes from the front what it sent. */
GByteArray *sk_rtmp_connection_get_output (SkRtmpConnection *self);

SkRtmpConnectionState sk_rtmp_connection_get_state (SkRtmpConnection *self);
/* Why the connection is CLOSING (for logs), else NULL. */
const char *sk_rtmp_connection_get_close_reason (SkRtmpConnection *self);
/* The `connect` app and the published key (NULL until known). */
const char *sk_rtmp_connection_get_app (SkRtmpConnection *self);
const char *sk_rtmp_connection_get_stream_key (SkRtmpConnection *self);
/* Bytes the largest unit can take: what the input buffer must be able to hold. */
gsize sk_rtmp_connection_max_unit_size (SkRtmpConnection *self);

/* "abcd...": the first 4 characters of a stream key, safe for logs (ASCII dots, so a C-locale
 * log never shows a "?" that looks like part of the key). */
char *sk_rtmp_mask_key (const char *key);

G_END_DECLS
