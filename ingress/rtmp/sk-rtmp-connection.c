/* streamkeeper: RTMP connection protocol logic (see sk-rtmp-connection.h). */
#include "sk-rtmp-connection.h"

#include <string.h>

#include "sk-rtmp-handshake.h"

/* What we announce to the peer after `connect`. */
#define OUR_WINDOW_ACK_SIZE 2500000
#define OUR_CHUNK_SIZE 4096
#define CSID_STREAM 5
/* The one message stream createStream hands out. */
#define PUBLISH_STREAM_ID 1
/* Stream keys are ~22-43 characters; anything this long is not one of ours. */
#define MAX_STREAM_KEY_LEN 512
/* Until a stream key is accepted a peer only sends commands and control messages (OBS's
 * connect is < 1 KiB): without this, every unauthenticated connection could make us buffer
 * twice the media message limit (2 × 8 MiB by default) in partial messages. */
#define MAX_MESSAGE_BEFORE_PUBLISH (64 * 1024)

struct _SkRtmpConnection {
  SkRtmpConnectionState state;
  SkRtmpConnectionCallbacks callbacks;
  gpointer user_data;

  SkRtmpHandshake *handshake;
  SkRtmpChunkReader *reader;
  GByteArray *out;
  guint out_chunk_size;

  guint64 bytes_in;       /* everything consumed, for Acknowledgement sequence numbers */
  guint64 bytes_acked;    /* bytes_in when we last acknowledged */
  guint32 peer_window;    /* the peer's Window Acknowledgement Size; 0 = none announced */
  guint max_message_size; /* the configured limit, applied once publishing */
  double object_encoding; /* from connect, echoed back */

  char *app;
  char *stream_key;
  char *close_reason;
  guint32 publish_stream_id; /* of the deferred `publish` (PUBLISH_WAIT) */
};

typedef gboolean (*CommandFunc) (SkRtmpConnection *self, const SkRtmpMessage *msg, GPtrArray *args,
                                 GError **error);

SkRtmpConnection *
sk_rtmp_connection_new (const SkRtmpChunkLimits *limits, const SkRtmpConnectionCallbacks *callbacks,
                        gpointer user_data)
{
  SkRtmpConnection *self = g_new0 (SkRtmpConnection, 1);
  self->callbacks = *callbacks;
  self->user_data = user_data;
  self->handshake = sk_rtmp_handshake_new ();
  SkRtmpChunkLimits before_publish = *limits;
  before_publish.max_message_size = MIN (limits->max_message_size, MAX_MESSAGE_BEFORE_PUBLISH);
  self->max_message_size = limits->max_message_size;
  self->reader = sk_rtmp_chunk_reader_new (&before_publish);
  self->out = g_byte_array_new ();
  self->out_chunk_size = SK_RTMP_DEFAULT_CHUNK_SIZE;
  return self;
}

void
sk_rtmp_connection_free (SkRtmpConnection *self)
{
  if (self == NULL)
    return;
  sk_rtmp_handshake_free (self->handshake);
  sk_rtmp_chunk_reader_free (self->reader);
  g_byte_array_unref (self->out);
  g_free (self->app);
  g_free (self->stream_key);
  g_free (self->close_reason);
  g_free (self);
}

GByteArray *
sk_rtmp_connection_get_output (SkRtmpConnection *self)
{
  return self->out;
}

SkRtmpConnectionState
sk_rtmp_connection_get_state (SkRtmpConnection *self)
{
  return self->state;
}

const char *
sk_rtmp_connection_get_close_reason (SkRtmpConnection *self)
{
  return self->close_reason;
}

const char *
sk_rtmp_connection_get_app (SkRtmpConnection *self)
{
  return self->app;
}

const char *
sk_rtmp_connection_get_stream_key (SkRtmpConnection *self)
{
  return self->stream_key;
}

gsize
sk_rtmp_connection_max_unit_size (SkRtmpConnection *self)
{
  return MAX (1 + SK_RTMP_HANDSHAKE_SIZE, sk_rtmp_chunk_reader_max_chunk_bytes (self->reader));
}

char *
sk_rtmp_mask_key (const char *key)
{
  if (key == NULL)
    return g_strdup ("(none)");
  /* Count characters, not bytes, so a multi-byte character is never cut in half. */
  if (g_utf8_validate (key, -1, NULL) && g_utf8_strlen (key, -1) > 4) {
    g_autofree char *head = g_utf8_substring (key, 0, 4);
    return g_strconcat (head, "...", NULL);
  }
  return g_strdup ("...");
}

/* ---- output ---- */

static void
put_be32 (guint8 *p, guint32 v)
{
  p[0] = v >> 24;
  p[1] = v >> 16;
  p[2] = v >> 8;
  p[3] = v;
}

static void
send_control (SkRtmpConnection *self, guint8 type_id, const guint8 *payload, gsize size)
{
  sk_rtmp_chunk_write (self->out, self->out_chunk_size, SK_RTMP_CSID_CONTROL, type_id, 0, 0,
                       payload, size);
}

static void
send_control_u32 (SkRtmpConnection *self, guint8 type_id, guint32 value)
{
  guint8 b[4];
  put_be32 (b, value);
  send_control (self, type_id, b, sizeof b);
}

static void
send_user_control (SkRtmpConnection *self, guint16 event, guint32 value)
{
  guint8 b[6] = { event >> 8, event };
  put_be32 (b + 2, value);
  send_control (self, SK_RTMP_MSG_USER_CONTROL, b, sizeof b);
}

static void
send_amf (SkRtmpConnection *self, guint32 csid, guint32 stream_id, GByteArray *body)
{
  sk_rtmp_chunk_write (self->out, self->out_chunk_size, csid, SK_RTMP_MSG_COMMAND_AMF0, stream_id,
                       0, body->data, body->len);
}

static SkAmf0Value *
status_object (const char *level, const char *code, const char *description)
{
  SkAmf0Value *info = sk_amf0_value_new_object ();
  sk_amf0_object_append (info, "level", sk_amf0_value_new_string (level));
  sk_amf0_object_append (info, "code", sk_amf0_value_new_string (code));
  sk_amf0_object_append (info, "description", sk_amf0_value_new_string (description));
  return info;
}

static void
send_status (SkRtmpConnection *self, guint32 stream_id, const char *level, const char *code,
             const char *description)
{
  g_autoptr (GByteArray) body = g_byte_array_new ();
  g_autoptr (SkAmf0Value) info = status_object (level, code, description);
  sk_amf0_write_string (body, "onStatus");
  sk_amf0_write_number (body, 0);
  sk_amf0_write_null (body);
  sk_amf0_write_value (body, info);
  send_amf (self, CSID_STREAM, stream_id, body);
}

/* `_result` for @txid with a null command object and an optional value. */
static void
send_result (SkRtmpConnection *self, double txid, const SkAmf0Value *value)
{
  g_autoptr (GByteArray) body = g_byte_array_new ();
  sk_amf0_write_string (body, "_result");
  sk_amf0_write_number (body, txid);
  sk_amf0_write_null (body);
  if (value != NULL)
    sk_amf0_write_value (body, value);
  send_amf (self, SK_RTMP_CSID_COMMAND, 0, body);
}

static void
start_closing (SkRtmpConnection *self, char *reason)
{
  g_free (self->close_reason);
  self->close_reason = reason;
  self->state = SK_RTMP_CONNECTION_CLOSING;
}

static gboolean
protocol_error (GError **error, const char *message)
{
  g_set_error_literal (error, SK_RTMP_ERROR, SK_RTMP_ERROR_PROTOCOL, message);
  return FALSE;
}

/* ---- commands ---- */

static double
arg_txid (GPtrArray *args)
{
  return args->len > 1 ? sk_amf0_value_get_number (args->pdata[1], 0) : 0;
}

static const SkAmf0Value *
arg (GPtrArray *args, guint i)
{
  return i < args->len ? args->pdata[i] : NULL;
}

static gboolean
cmd_connect (SkRtmpConnection *self, const SkRtmpMessage *msg, GPtrArray *args, GError **error)
{
  if (self->state != SK_RTMP_CONNECTION_CONNECTING)
    return protocol_error (error, "connect sent twice");

  const SkAmf0Value *cmd = arg (args, 2);
  const char *app = sk_amf0_value_get_string (sk_amf0_object_get (cmd, "app"));
  /* Any app name is accepted (OBS users type "live", "live/", "app"…): the stream key alone
   * authenticates. The app is kept for logs. */
  self->app = g_strdup (app != NULL ? app : "");
  self->object_encoding = sk_amf0_value_get_number (sk_amf0_object_get (cmd, "objectEncoding"), 0);

  guint8 bw[5];
  put_be32 (bw, OUR_WINDOW_ACK_SIZE);
  bw[4] = 2; /* dynamic */
  send_control_u32 (self, SK_RTMP_MSG_WINDOW_ACK_SIZE, OUR_WINDOW_ACK_SIZE);
  send_control (self, SK_RTMP_MSG_SET_PEER_BANDWIDTH, bw, sizeof bw);
  send_control_u32 (self, SK_RTMP_MSG_SET_CHUNK_SIZE, OUR_CHUNK_SIZE);
  self->out_chunk_size = OUR_CHUNK_SIZE;

  g_autoptr (GByteArray) body = g_byte_array_new ();
  g_autoptr (SkAmf0Value) props = sk_amf0_value_new_object ();
  g_autoptr (SkAmf0Value) info
      = status_object ("status", "NetConnection.Connect.Success", "Connection succeeded.");
  sk_amf0_object_append (props, "fmsVer", sk_amf0_value_new_string ("FMS/3,0,1,123"));
  sk_amf0_object_append (props, "capabilities", sk_amf0_value_new_number (31));
  sk_amf0_object_append (info, "objectEncoding", sk_amf0_value_new_number (self->object_encoding));
  sk_amf0_write_string (body, "_result");
  sk_amf0_write_number (body, arg_txid (args));
  sk_amf0_write_value (body, props);
  sk_amf0_write_value (body, info);
  send_amf (self, SK_RTMP_CSID_COMMAND, 0, body);

  self->state = SK_RTMP_CONNECTION_CONNECTED;
  return TRUE;
}

static gboolean
cmd_release_stream (SkRtmpConnection *self, const SkRtmpMessage *msg, GPtrArray *args,
                    GError **error)
{
  g_autoptr (SkAmf0Value) undefined = sk_amf0_value_new_null ();
  undefined->type = SK_AMF0_UNDEFINED;
  send_result (self, arg_txid (args), undefined);
  return TRUE;
}

static gboolean
cmd_fc_publish (SkRtmpConnection *self, const SkRtmpMessage *msg, GPtrArray *args, GError **error)
{
  const char *name = sk_amf0_value_get_string (arg (args, 3));
  cmd_release_stream (self, msg, args, error);

  /* OBS and Flash encoders wait for this before publishing on some servers. */
  g_autoptr (GByteArray) body = g_byte_array_new ();
  g_autoptr (SkAmf0Value) info = sk_amf0_value_new_object ();
  sk_amf0_object_append (info, "code", sk_amf0_value_new_string ("NetStream.Publish.Start"));
  sk_amf0_object_append (info, "description", sk_amf0_value_new_string (name ? name : ""));
  sk_amf0_write_string (body, "onFCPublish");
  sk_amf0_write_number (body, 0);
  sk_amf0_write_null (body);
  sk_amf0_write_value (body, info);
  send_amf (self, SK_RTMP_CSID_COMMAND, 0, body);
  return TRUE;
}

static gboolean
cmd_create_stream (SkRtmpConnection *self, const SkRtmpMessage *msg, GPtrArray *args,
                   GError **error)
{
  g_autoptr (SkAmf0Value) id = sk_amf0_value_new_number (PUBLISH_STREAM_ID);
  send_result (self, arg_txid (args), id);
  return TRUE;
}

/* The answer to `publish`: Publish.Start, or the refusal and closing. */
static void
publish_answer (SkRtmpConnection *self, guint32 stream_id, const GError *refusal)
{
  if (refusal != NULL) {
    const char *code = g_error_matches (refusal, SK_RTMP_ERROR, SK_RTMP_ERROR_BAD_NAME)
                           ? "NetStream.Publish.BadName"
                           : "NetStream.Publish.Rejected";
    send_status (self, stream_id, "error", code, refusal->message);
    start_closing (self, g_strdup_printf ("publish refused (%s: %s)", code, refusal->message));
    return;
  }

  g_autofree char *masked = sk_rtmp_mask_key (self->stream_key);
  g_autofree char *description = g_strdup_printf ("%s is now published.", masked);
  send_user_control (self, SK_RTMP_UC_STREAM_BEGIN, stream_id);
  send_status (self, stream_id, "status", "NetStream.Publish.Start", description);
  self->state = SK_RTMP_CONNECTION_PUBLISHING;
  sk_rtmp_chunk_reader_set_max_message_size (self->reader, self->max_message_size);
}

static gboolean
cmd_publish (SkRtmpConnection *self, const SkRtmpMessage *msg, GPtrArray *args, GError **error)
{
  if (self->state == SK_RTMP_CONNECTION_PUBLISHING)
    return protocol_error (error, "publish while already publishing");

  const SkAmf0Value *name = arg (args, 3);
  const char *raw = sk_amf0_value_get_string (name);
  /* The key ends at a query string (…?token=x) and must be plain text. */
  g_autofree char *key = NULL;
  if (raw != NULL && name->string_len == strlen (raw) && name->string_len <= MAX_STREAM_KEY_LEN)
    key = g_strndup (raw, strcspn (raw, "?"));

  g_autoptr (GError) refusal = NULL;
  if (key == NULL || key[0] == '\0') {
    g_set_error_literal (&refusal, SK_RTMP_ERROR, SK_RTMP_ERROR_BAD_NAME, "missing stream key");
  } else {
    g_free (self->stream_key);
    self->stream_key = g_strdup (key);
    if (self->callbacks.publish (self->user_data, self->app, key, &refusal))
      g_clear_error (&refusal);
    else if (refusal == NULL)
      g_set_error_literal (&refusal, SK_RTMP_ERROR, SK_RTMP_ERROR_REJECTED, "publish refused");
  }

  if (g_error_matches (refusal, SK_RTMP_ERROR, SK_RTMP_ERROR_PENDING)) {
    self->state = SK_RTMP_CONNECTION_PUBLISH_WAIT;
    self->publish_stream_id = msg->stream_id;
    return TRUE;
  }
  publish_answer (self, msg->stream_id, refusal);
  return TRUE;
}

void
sk_rtmp_connection_answer_publish (SkRtmpConnection *self, const GError *refusal)
{
  g_return_if_fail (self->state == SK_RTMP_CONNECTION_PUBLISH_WAIT);
  publish_answer (self, self->publish_stream_id, refusal);
}

static gboolean
cmd_unpublish (SkRtmpConnection *self, const SkRtmpMessage *msg, GPtrArray *args, GError **error)
{
  if (self->state != SK_RTMP_CONNECTION_PUBLISHING)
    return TRUE;
  self->state = SK_RTMP_CONNECTION_CONNECTED;
  self->callbacks.unpublish (self->user_data);
  return TRUE;
}

static gboolean
cmd_play (SkRtmpConnection *self, const SkRtmpMessage *msg, GPtrArray *args, GError **error)
{
  send_status (self, msg->stream_id, "error", "NetStream.Play.Failed",
               "This server only accepts publishing.");
  start_closing (self, g_strdup ("play refused (ingest only)"));
  return TRUE;
}

/* Command name → handler, nginx-rtmp style. Anything else is ignored. */
static const struct {
  const char *name;
  CommandFunc func;
  gboolean needs_connect;
} commands[] = {
  { "connect", cmd_connect, FALSE },
  { "releaseStream", cmd_release_stream, TRUE },
  { "FCPublish", cmd_fc_publish, TRUE },
  { "createStream", cmd_create_stream, TRUE },
  { "publish", cmd_publish, TRUE },
  { "FCUnpublish", cmd_unpublish, TRUE },
  { "deleteStream", cmd_unpublish, TRUE },
  { "closeStream", cmd_unpublish, TRUE },
  { "play", cmd_play, TRUE },
  { "play2", cmd_play, TRUE },
};

static gboolean
handle_command (SkRtmpConnection *self, const SkRtmpMessage *msg, gsize skip, GError **error)
{
  g_autoptr (GError) amf_error = NULL;
  g_autoptr (GPtrArray) args = sk_amf0_decode_all (msg->data + skip, msg->size - skip, &amf_error);
  if (args == NULL) {
    g_propagate_prefixed_error (error, g_steal_pointer (&amf_error), "command: ");
    return FALSE;
  }
  const char *name = sk_amf0_value_get_string (arg (args, 0));
  if (name == NULL)
    return protocol_error (error, "command without a name");

  for (guint i = 0; i < G_N_ELEMENTS (commands); i++) {
    if (!g_str_equal (commands[i].name, name))
      continue;
    if (commands[i].needs_connect && self->state == SK_RTMP_CONNECTION_CONNECTING) {
      g_set_error (error, SK_RTMP_ERROR, SK_RTMP_ERROR_PROTOCOL, "%s before connect", name);
      return FALSE;
    }
    return commands[i].func (self, msg, args, error);
  }
  g_debug ("ignoring RTMP command %s", name);
  return TRUE;
}

/* @setDataFrame("onMetaData", {…}) becomes the script tag onMetaData {…}, as nginx-rtmp does;
 * a bare onMetaData passes as is; other data messages are dropped. */
static gboolean
handle_data (SkRtmpConnection *self, const SkRtmpMessage *msg, gsize skip, GError **error)
{
  const guint8 *data = msg->data + skip;
  gsize size = msg->size - skip;
  gsize used = 0;
  g_autoptr (GError) amf_error = NULL;
  g_autoptr (SkAmf0Value) first = sk_amf0_decode (data, size, &used, &amf_error);
  const char *name = sk_amf0_value_get_string (first);

  if (g_strcmp0 (name, "@setDataFrame") == 0) {
    data += used;
    size -= used;
    g_clear_pointer (&first, sk_amf0_value_free);
    first = sk_amf0_decode (data, size, &used, NULL);
    name = sk_amf0_value_get_string (first);
  }
  if (g_strcmp0 (name, "onMetaData") != 0) {
    g_debug ("dropping data message %s", name ? name : "(malformed)");
    return TRUE;
  }
  return self->callbacks.media (self->user_data, SK_RTMP_MSG_DATA_AMF0, msg->timestamp, data, size,
                                error);
}

static gboolean
handle_message (SkRtmpConnection *self, const SkRtmpMessage *msg, GError **error)
{
  switch (msg->type_id) {
    case SK_RTMP_MSG_WINDOW_ACK_SIZE:
      if (msg->size < 4)
        return protocol_error (error, "short Window Acknowledgement Size");
      self->peer_window
          = (guint32)msg->data[0] << 24 | msg->data[1] << 16 | msg->data[2] << 8 | msg->data[3];
      return TRUE;
    case SK_RTMP_MSG_USER_CONTROL:
      if (msg->size >= 6 && msg->data[0] == 0 && msg->data[1] == SK_RTMP_UC_PING_REQUEST) {
        guint32 t
            = (guint32)msg->data[2] << 24 | msg->data[3] << 16 | msg->data[4] << 8 | msg->data[5];
        send_user_control (self, SK_RTMP_UC_PING_RESPONSE, t);
      }
      return TRUE;
    case SK_RTMP_MSG_AUDIO:
    case SK_RTMP_MSG_VIDEO:
      if (self->state != SK_RTMP_CONNECTION_PUBLISHING)
        return TRUE;
      return self->callbacks.media (self->user_data, msg->type_id, msg->timestamp, msg->data,
                                    msg->size, error);
    case SK_RTMP_MSG_DATA_AMF0:
    case SK_RTMP_MSG_DATA_AMF3:
      if (self->state != SK_RTMP_CONNECTION_PUBLISHING)
        return TRUE;
      /* AMF3 data/command messages are AMF0 bodies behind a leading 0 byte. */
      return handle_data (
          self, msg, msg->type_id == SK_RTMP_MSG_DATA_AMF3 && msg->size > 0 && msg->data[0] == 0,
          error);
    case SK_RTMP_MSG_COMMAND_AMF0:
    case SK_RTMP_MSG_COMMAND_AMF3:
      return handle_command (
          self, msg, msg->type_id == SK_RTMP_MSG_COMMAND_AMF3 && msg->size > 0 && msg->data[0] == 0,
          error);
    default:
      /* Acknowledgement, Set Peer Bandwidth, aggregate, shared objects: nothing to do. */
      return TRUE;
  }
}

/* Acknowledge once the peer's announced window has been received. */
static void
maybe_ack (SkRtmpConnection *self)
{
  if (self->peer_window == 0 || self->bytes_in - self->bytes_acked < self->peer_window)
    return;
  self->bytes_acked = self->bytes_in;
  send_control_u32 (self, SK_RTMP_MSG_ACK, (guint32)self->bytes_in);
}

gboolean
sk_rtmp_connection_feed (SkRtmpConnection *self, const guint8 *data, gsize size, gsize *consumed,
                         gsize *needed, GError **error)
{
  *consumed = 0;
  *needed = 0;

  /* While a `publish` waits for its answer, what follows it stays with the caller. */
  while (self->state != SK_RTMP_CONNECTION_CLOSING
         && self->state != SK_RTMP_CONNECTION_PUBLISH_WAIT) {
    gsize used = 0;
    g_autoptr (SkRtmpMessage) msg = NULL;
    SkRtmpParseStatus status;

    if (self->state == SK_RTMP_CONNECTION_HANDSHAKE) {
      status = sk_rtmp_handshake_feed (self->handshake, data + *consumed, size - *consumed, &used,
                                       needed, self->out, error);
      if (status == SK_RTMP_PARSE_OK && sk_rtmp_handshake_is_done (self->handshake)) {
        g_debug ("handshake complete (%s)",
                 sk_rtmp_handshake_is_complex (self->handshake) ? "Flash digest scheme" : "plain");
        self->state = SK_RTMP_CONNECTION_CONNECTING;
      }
    } else {
      status = sk_rtmp_chunk_reader_read (self->reader, data + *consumed, size - *consumed, &used,
                                          needed, &msg, error);
    }
    if (status == SK_RTMP_PARSE_ERROR)
      return FALSE;
    if (status == SK_RTMP_PARSE_NEED_MORE)
      return TRUE;

    *consumed += used;
    self->bytes_in += used;
    if (msg != NULL && !handle_message (self, msg, error))
      return FALSE;
    maybe_ack (self);
  }
  *needed = 0;
  return TRUE;
}
