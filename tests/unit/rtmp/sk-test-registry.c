/* Test-only ingress registry (see sk-test-registry.h). */
#include "sk-test-registry.h"

#include <string.h>

struct _SkIngressSession {
  SkIngressRegistry *registry;
  SkTestSessionLog *log;
  SkIngressCloseFunc close_func;
  gpointer transport;
};

static void
log_free (SkTestSessionLog *log)
{
  g_free (log->key);
  g_free (log->remote);
  g_free (log->end_reason);
  g_free (log);
}

SkIngressRegistry *
sk_test_registry_new (void)
{
  SkIngressRegistry *self = g_new0 (SkIngressRegistry, 1);
  self->logs = g_ptr_array_new_with_free_func ((GDestroyNotify)log_free);
  return self;
}

void
sk_test_registry_destroy (SkIngressRegistry *self)
{
  g_ptr_array_unref (self->logs);
  g_free (self);
}

SkTestSessionLog *
sk_test_registry_last (SkIngressRegistry *self)
{
  return self->logs->len > 0 ? g_ptr_array_index (self->logs, self->logs->len - 1) : NULL;
}

SkIngressSession *
sk_ingress_registry_start_session (SkIngressRegistry *self, SkInputType type,
                                   const char *stream_key, const char *remote_address,
                                   SkIngressCloseFunc close_func, gpointer transport,
                                   GError **error)
{
  g_assert_cmpint (type, ==, SK_INPUT_RTMP);
  if (!g_str_has_prefix (stream_key, "good")
      && !(g_str_has_prefix (stream_key, "late") && self->n_refreshed > 0)) {
    self->n_refused++;
    if (g_str_equal (stream_key, "busy"))
      g_set_error (error, SK_ERROR, SK_ERROR_CONFLICT, "key live");
    else if (g_str_equal (stream_key, "full"))
      g_set_error (error, SK_ERROR, SK_ERROR_LIMIT, "node full");
    else if (g_str_equal (stream_key, "drain"))
      g_set_error (error, SK_ERROR, SK_ERROR_UNAVAILABLE, "draining");
    else
      g_set_error (error, SK_ERROR, SK_ERROR_NOT_FOUND, "no such key");
    return NULL;
  }
  SkIngressSession *session = g_new0 (SkIngressSession, 1);
  session->registry = self;
  session->log = g_new0 (SkTestSessionLog, 1);
  session->log->key = g_strdup (stream_key);
  session->log->remote = g_strdup (remote_address);
  session->close_func = close_func;
  session->transport = transport;
  g_ptr_array_add (self->logs, session->log);
  self->n_live++;
  self->live = session;
  return session;
}

const char *
sk_ingress_session_get_ingress_id (SkIngressSession *session)
{
  return "IN_test";
}

gboolean
sk_ingress_session_push_flv_tag (SkIngressSession *session, guint8 tag_type, guint32 timestamp_ms,
                                 const guint8 *data, gsize size, GError **error)
{
  SkTestSessionLog *log = session->log;
  g_assert_false (log->ended);
  switch (tag_type) {
    case 9:
      if (log->n_video == 0) {
        log->first_video_ts = timestamp_ms;
        /* FLV video: codec 7 (AVC), AVCPacketType 0 (sequence header). */
        log->video_seq_first = size >= 2 && (data[0] & 0x0f) == 7 && data[1] == 0;
      } else if (timestamp_ms < log->last_video_ts) {
        log->ts_went_back = TRUE;
      }
      log->last_video_ts = timestamp_ms;
      log->n_video++;
      break;
    case 8:
      if (log->n_audio > 0 && timestamp_ms < log->last_audio_ts)
        log->ts_went_back = TRUE;
      log->last_audio_ts = timestamp_ms;
      log->n_audio++;
      break;
    case 18:
      /* A script tag starts with the AMF0 string "onMetaData" (the @setDataFrame is gone). */
      log->meta_is_onmetadata = size > 13 && data[0] == 2 && data[1] == 0 && data[2] == 10
                                && memcmp (data + 3, "onMetaData", 10) == 0;
      log->n_meta++;
      break;
    default:
      g_assert_not_reached ();
  }
  return TRUE;
}

void
sk_ingress_session_end (SkIngressSession *session, const char *reason)
{
  SkIngressRegistry *self = session->registry;
  g_assert_false (session->log->ended);
  session->log->ended = TRUE;
  session->log->end_reason = g_strdup (reason);
  self->n_live--;
  if (self->live == session)
    self->live = NULL;
  g_free (session);
}

void
sk_test_registry_close_live (SkIngressRegistry *self, const char *reason)
{
  SkIngressSession *session = self->live;
  g_assert_nonnull (session);
  session->log->ended = TRUE;
  session->log->end_reason = g_strdup (reason);
  self->n_live--;
  self->live = NULL;
  /* As the contract says: the session is ended and freed before the close func runs. */
  SkIngressCloseFunc func = session->close_func;
  gpointer transport = session->transport;
  g_free (session);
  func (transport, reason);
}

static gboolean
refresh_done (gpointer data)
{
  SkIngressRegistry *self = data;

  self->refresh_source = 0;
  self->n_refreshed++;
  self->refresh_func (NULL, self->refresh_data);
  return G_SOURCE_REMOVE;
}

guint
sk_ingress_registry_refresh (SkIngressRegistry *self, guint timeout_ms, SkIngressRefreshFunc func,
                             gpointer user_data)
{
  g_assert_cmpuint (self->refresh_source, ==, 0);
  self->n_refreshes++;
  self->refresh_func = func;
  self->refresh_data = user_data;
  self->refresh_source = g_timeout_add (10, refresh_done, self);
  return self->refresh_source;
}

void
sk_ingress_registry_cancel_refresh (SkIngressRegistry *self, guint id)
{
  g_assert_cmpuint (id, ==, self->refresh_source);
  g_clear_handle_id (&self->refresh_source, g_source_remove);
}
