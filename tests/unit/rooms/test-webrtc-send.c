/*
 * sk_webrtc_tune_send_path and sk_webrtc_use_own_srtp: a sending and a receiving webrtcbin in
 * one pipeline, over 127.0.0.1, fed by x264enc through sk_webrtc_add_send_pad. Tuned, the
 * payloader's buffer lists skip the idle FEC encoders and reach nicesink as lists, and the RTP
 * is protected by sk-srtp.c, not by srtpenc (whose libsrtp still protects RTCP; the receiver's
 * libsrtp takes both); untuned (the control), rtpulpfecenc takes every packet, nicesink gets
 * them one by one and srtpenc protects them.
 * And sk_webrtc_bypass_receive_queues on the receiver: tuned, the packets reach its jitter
 * buffer on the bypass's reader thread (never on nicesrc's); untuned, on the receive queue's.
 */
#define _GNU_SOURCE /* pthread_getname_np */
#include <pthread.h>
#include <string.h>

#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <gst/webrtc/webrtc.h>

#include "rooms/sk-webrtc.h"

#define MIN_FRAMES 30
#define H264_CAPS "video/x-h264,stream-format=byte-stream,alignment=au"

typedef struct {
  GstElement *pipeline, *sender, *receiver;
  GstElement *media; /* the encoder pipeline, started once connected */
  GstPad *send_pad;
  GstClock *clock;
  GstClockTime base_time;
  gint connected;
  gint frames;  /* depayloaded by the receiver */
  gint sink[2]; /* buffers, lists into the sender's nicesink */
  gint fec[2];  /* buffers, lists into the sender's rtpulpfecenc */
  gint srtp[2]; /* buffers, lists that srtpenc's own RTP chain protected */
  gint n_nicesinks, n_fec_encoders;
  gint jb_from_reader, jb_from_nicesrc, jb_from_queue;
  gint jb_untimed;
      /* packets into the jitter buffers without a DTS (their arrival time) */ /* packets into the
                                                                                  receiver's jitter
                                                                                  buffers, by thread
                                                                                */
} Pair;

static void
on_connection_state (GstElement *webrtc, GParamSpec *pspec, Pair *p)
{
  GstWebRTCPeerConnectionState state;
  g_object_get (webrtc, "connection-state", &state, NULL);
  if (state == GST_WEBRTC_PEER_CONNECTION_STATE_CONNECTED)
    g_atomic_int_set (&p->connected, 1);
}

/* webrtcbin keeps candidates that come before the remote description until it is set. */
static void
on_ice_candidate (GstElement *webrtc, guint mline, char *candidate, GstElement *other)
{
  g_signal_emit_by_name (other, "add-ice-candidate", mline, candidate);
}

static GstFlowReturn
on_frame (GstAppSink *sink, gpointer user_data)
{
  Pair *p = user_data;
  g_autoptr (GstSample) sample = gst_app_sink_pull_sample (sink);
  if (sample != NULL)
    g_atomic_int_inc (&p->frames);
  return sample != NULL ? GST_FLOW_OK : GST_FLOW_EOS;
}

static void
on_pad_added (GstElement *webrtc, GstPad *pad, Pair *p)
{
  g_autoptr (GError) error = NULL;

  if (GST_PAD_DIRECTION (pad) != GST_PAD_SRC)
    return;
  /* alignment=au: one sample per frame */
  GstElement *bin = gst_parse_bin_from_description ("rtph264depay ! " H264_CAPS " ! "
                                                    "appsink name=frames sync=false async=false",
                                                    TRUE, &error);
  g_assert_no_error (error);
  gst_bin_add (GST_BIN (p->pipeline), bin);
  g_autoptr (GstElement) sink = gst_bin_get_by_name (GST_BIN (bin), "frames");
  GstAppSinkCallbacks cb = { .new_sample = on_frame };
  gst_app_sink_set_callbacks (GST_APP_SINK (sink), &cb, p, NULL);
  gst_element_sync_state_with_parent (bin);
  g_autoptr (GstPad) sinkpad = gst_element_get_static_pad (bin, "sink");
  g_assert_cmpint (gst_pad_link (pad, sinkpad), ==, GST_PAD_LINK_OK);
}

/* Encoded frames go out in the webrtc pipeline's running time, as sk-whep.c restamps them. */
static GstFlowReturn
on_encoded (GstAppSink *sink, gpointer user_data)
{
  Pair *p = user_data;
  g_autoptr (GstSample) sample = gst_app_sink_pull_sample (sink);
  if (sample == NULL)
    return GST_FLOW_EOS;
  GstBuffer *buf = gst_buffer_copy (gst_sample_get_buffer (sample));
  GST_BUFFER_PTS (buf) = gst_clock_get_time (p->clock) - p->base_time;
  GST_BUFFER_DTS (buf) = GST_CLOCK_TIME_NONE;
  GstFlowReturn ret = gst_pad_push (p->send_pad, buf);
  if (ret != GST_FLOW_OK)
    g_warning ("send pad push: %s", gst_flow_get_name (ret));
  return GST_FLOW_OK;
}

/* @user_data: a Pair's counters, buffers then lists */
static GstPadProbeReturn
count_items (GstPad *pad, GstPadProbeInfo *info, gpointer user_data)
{
  gint *counts = user_data;
  g_atomic_int_inc (&counts[info->type & GST_PAD_PROBE_TYPE_BUFFER_LIST ? 1 : 0]);
  return GST_PAD_PROBE_OK;
}

/* Added after sk-srtp.c's probe (use_own_srtp connects first): counts what it leaves to
 * srtpenc. dtlssrtpenc may have asked for the pad before its bin reached webrtcbin. */
static void
on_srtpenc_pad_added (GstElement *srtpenc, GstPad *pad, Pair *p)
{
  if (GST_PAD_DIRECTION (pad) == GST_PAD_SINK && g_str_has_prefix (GST_PAD_NAME (pad), "rtp_sink"))
    gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST, count_items,
                       p->srtp, NULL);
}

/* webrtcbin builds a send stream's clocksync and FEC bin when caps first reach its sink pad,
 * and rtph264pay (byte-stream) sets its caps with its first packets: the encoders appear during
 * the first push, so the probes go in as elements are added, not by a search once connected. */
static void
on_deep_element_added (GstBin *bin, GstBin *sub_bin, GstElement *element, Pair *p)
{
  GstElementFactory *factory = gst_element_get_factory (element);
  const char *name = factory != NULL ? GST_OBJECT_NAME (factory) : "";
  gboolean sink = g_str_equal (name, "nicesink");

  if (g_str_equal (name, "srtpenc")) {
    g_signal_connect (element, "pad-added", G_CALLBACK (on_srtpenc_pad_added), p);
    g_autoptr (GstPad) pad = gst_element_get_static_pad (element, "rtp_sink_0");
    if (pad != NULL)
      on_srtpenc_pad_added (element, pad, p);
    return;
  }
  if (!sink && !g_str_equal (name, "rtpulpfecenc"))
    return;
  g_autoptr (GstPad) pad = gst_element_get_static_pad (element, "sink");
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST, count_items,
                     sink ? p->sink : p->fec, NULL);
  g_atomic_int_inc (sink ? &p->n_nicesinks : &p->n_fec_encoders);
}

/* The receiver's jitter buffer input: which thread brings each packet. */
static GstPadProbeReturn
count_jitterbuffer_thread (GstPad *pad, GstPadProbeInfo *info, gpointer user_data)
{
  Pair *p = user_data;
  char name[16] = "";
  pthread_getname_np (pthread_self (), name, sizeof name);
  GstBuffer *buffer = GST_PAD_PROBE_INFO_BUFFER (info);
  if (!GST_BUFFER_DTS_IS_VALID (buffer))
    g_atomic_int_inc (&p->jb_untimed);
  if (g_str_equal (name, "sk-rtc-rx"))
    g_atomic_int_inc (&p->jb_from_reader);
  else if (g_str_has_prefix (name, "nicesrc"))
    g_atomic_int_inc (&p->jb_from_nicesrc);
  else if (g_str_has_prefix (name, "queue"))
    g_atomic_int_inc (&p->jb_from_queue);
  return GST_PAD_PROBE_OK;
}

static void
on_receiver_element_added (GstBin *bin, GstBin *sub_bin, GstElement *element, Pair *p)
{
  GstElementFactory *factory = gst_element_get_factory (element);
  if (factory == NULL || !g_str_equal (GST_OBJECT_NAME (factory), "rtpjitterbuffer"))
    return;
  g_autoptr (GstPad) pad = gst_element_get_static_pad (element, "sink");
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, count_jitterbuffer_thread, p, NULL);
}

/* Polls *@value up to @timeout_ms; errors on either pipeline's bus fail the test at once. */
static gboolean
wait_for (Pair *p, const gint *value, gint min, guint timeout_ms)
{
  gint64 deadline = g_get_monotonic_time () + (gint64)timeout_ms * 1000;
  GstElement *pipelines[] = { p->pipeline, p->media };

  while (g_atomic_int_get (value) < min) {
    for (guint i = 0; i < G_N_ELEMENTS (pipelines); i++) {
      g_autoptr (GstBus) bus = pipelines[i] != NULL ? gst_element_get_bus (pipelines[i]) : NULL;
      g_autoptr (GstMessage) msg
          = bus != NULL ? gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR) : NULL;
      g_autoptr (GError) error = NULL;
      if (msg != NULL) {
        gst_message_parse_error (msg, &error, NULL);
        g_error ("%s: %s", GST_MESSAGE_SRC_NAME (msg), error->message);
      }
    }
    if (g_get_monotonic_time () > deadline)
      return FALSE;
    g_usleep (1000);
  }
  return TRUE;
}

/* An action that answers through a GstPromise; returns the reply's @field, if any. */
static GstWebRTCSessionDescription *
negotiate_step (GstElement *webrtc, const char *action, GstWebRTCSessionDescription *desc,
                const char *field)
{
  g_autoptr (GstPromise) promise = gst_promise_new ();
  GstWebRTCSessionDescription *out = NULL;

  g_signal_emit_by_name (webrtc, action, desc, promise);
  g_assert_cmpint (gst_promise_wait (promise), ==, GST_PROMISE_RESULT_REPLIED);
  const GstStructure *reply = gst_promise_get_reply (promise);
  if (reply != NULL && gst_structure_has_field (reply, "error")) {
    g_autoptr (GError) error = NULL;
    gst_structure_get (reply, "error", G_TYPE_ERROR, &error, NULL);
    g_error ("%s %s: %s", GST_ELEMENT_NAME (webrtc), action, error->message);
  }
  if (field != NULL)
    g_assert_true (
        gst_structure_get (reply, field, GST_TYPE_WEBRTC_SESSION_DESCRIPTION, &out, NULL));
  return out;
}

static GstElement *
add_webrtcbin (Pair *p, const char *name, gboolean tuned)
{
  GstElement *wb = gst_element_factory_make ("webrtcbin", name);
  g_assert_nonnull (wb);
  if (tuned) {
    sk_webrtc_tune_send_path (wb);
    sk_webrtc_use_own_srtp (wb);
  }
  gst_bin_add (GST_BIN (p->pipeline), wb);
  gst_util_set_object_arg (G_OBJECT (wb), "bundle-policy", "max-bundle");
  sk_webrtc_configure_ice (wb, (const char *const[]){ "127.0.0.1", NULL }, 0, 0);
  return wb;
}

static void
test_send_path (gconstpointer data)
{
  gboolean tuned = GPOINTER_TO_INT (data);
  Pair p = { 0 };
  g_autoptr (GError) error = NULL;

  p.pipeline = gst_object_ref_sink (gst_pipeline_new (NULL));
  p.sender = add_webrtcbin (&p, "sender", tuned);
  p.receiver = add_webrtcbin (&p, "receiver", FALSE);
  g_signal_connect (p.sender, "notify::connection-state", G_CALLBACK (on_connection_state), &p);
  g_signal_connect (p.sender, "on-ice-candidate", G_CALLBACK (on_ice_candidate), p.receiver);
  g_signal_connect (p.receiver, "on-ice-candidate", G_CALLBACK (on_ice_candidate), p.sender);
  g_signal_connect (p.receiver, "pad-added", G_CALLBACK (on_pad_added), &p);
  g_signal_connect (p.sender, "deep-element-added", G_CALLBACK (on_deep_element_added), &p);
  g_signal_connect (p.receiver, "deep-element-added", G_CALLBACK (on_receiver_element_added), &p);

  /* As sk-whep.c: no profile-level-id, the payloader's own must pass. */
  g_autoptr (GstCaps) rtp_caps
      = gst_caps_from_string ("application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,"
                              "payload=96,packetization-mode=(string)1");
  p.send_pad = sk_webrtc_add_send_pad (GST_BIN (p.pipeline), p.sender, SK_TRACK_KIND_VIDEO, "H264",
                                       0, 96, rtp_caps, FALSE, "test-video", &error);
  g_assert_no_error (error);
  g_autoptr (GstCaps) recv_caps = gst_caps_from_string (
      "application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=96,"
      "packetization-mode=(string)1,profile-level-id=(string)42e01f");
  g_autoptr (GstWebRTCRTPTransceiver) trans = NULL;
  g_signal_emit_by_name (p.receiver, "add-transceiver",
                         GST_WEBRTC_RTP_TRANSCEIVER_DIRECTION_RECVONLY, recv_caps, &trans);
  g_assert_nonnull (trans);
  g_assert_cmpint (gst_element_set_state (p.pipeline, GST_STATE_PLAYING), !=,
                   GST_STATE_CHANGE_FAILURE);

  g_autoptr (GstWebRTCSessionDescription) offer
      = negotiate_step (p.sender, "create-offer", NULL, "offer");
  negotiate_step (p.sender, "set-local-description", offer, NULL);
  negotiate_step (p.receiver, "set-remote-description", offer, NULL);
  g_autoptr (GstWebRTCSessionDescription) answer
      = negotiate_step (p.receiver, "create-answer", NULL, "answer");
  negotiate_step (p.receiver, "set-local-description", answer, NULL);
  negotiate_step (p.sender, "set-remote-description", answer, NULL);
  if (!wait_for (&p, &p.connected, 1, 10000))
    g_error ("the sender did not connect");
  /* As sk-whip-session.c does when its publisher's DTLS is up (the sender's is: the receiver's
   * comes with the same handshake). */
  g_autoptr (SkWebrtcReceiveBypass) bypass = NULL;
  if (tuned) {
    bypass = sk_webrtc_bypass_receive_queues (p.receiver);
    g_assert_nonnull (bypass);
    g_assert_cmpuint (sk_webrtc_receive_bypass_get_n_transports (bypass), ==, 1);
  }

  /* Connected: DTLS is up, pushing no longer blocks. As sk-whep.c does once connected: the
   * new RTP session needs its latency. */
  gst_bin_recalculate_latency (GST_BIN (p.pipeline));
  p.clock = gst_element_get_clock (p.pipeline);
  g_assert_nonnull (p.clock);
  p.base_time = gst_element_get_base_time (p.pipeline);

  /* Started only now, so the first frame pushed is the encoder's first keyframe. */
  p.media = gst_parse_launch (
      "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 ! "
      "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bframes=0 ! "
      "h264parse config-interval=-1 ! " H264_CAPS " ! "
      "appsink name=enc sync=false",
      &error);
  g_assert_no_error (error);
  g_autoptr (GstElement) enc = gst_bin_get_by_name (GST_BIN (p.media), "enc");
  GstAppSinkCallbacks cb = { .new_sample = on_encoded };
  gst_app_sink_set_callbacks (GST_APP_SINK (enc), &cb, &p, NULL);
  g_assert_cmpint (gst_element_set_state (p.media, GST_STATE_PLAYING), !=,
                   GST_STATE_CHANGE_FAILURE);

  gboolean got = wait_for (&p, &p.frames, MIN_FRAMES, 15000);
  gst_element_set_state (p.media, GST_STATE_NULL);
  gint frames = g_atomic_int_get (&p.frames);
  gint sink_buffers = g_atomic_int_get (&p.sink[0]);
  gint sink_lists = g_atomic_int_get (&p.sink[1]);
  gint fec_buffers = g_atomic_int_get (&p.fec[0]);
  gint fec_lists = g_atomic_int_get (&p.fec[1]);
  gint srtp_items = g_atomic_int_get (&p.srtp[0]) + g_atomic_int_get (&p.srtp[1]);
  gint jb_reader = g_atomic_int_get (&p.jb_from_reader);
  gint jb_nicesrc = g_atomic_int_get (&p.jb_from_nicesrc);
  gint jb_queue = g_atomic_int_get (&p.jb_from_queue);
  g_autofree char *counts = g_strdup_printf (
      "%s: %d frames; nicesink %d buffers, %d lists; rtpulpfecenc %d buffers, %d lists; "
      "srtpenc protected %d buffers and lists of RTP; receiver's jitter buffer got %d packets "
      "on the reader thread, %d on nicesrc's, %d on the queue's",
      tuned ? "tuned" : "untuned", frames, sink_buffers, sink_lists, fec_buffers, fec_lists,
      srtp_items, jb_reader, jb_nicesrc, jb_queue);
  if (!got)
    g_error ("timed out waiting for %d frames: %s", MIN_FRAMES, counts);
  g_test_message ("%s", counts);

  g_assert_cmpint (frames, >=, MIN_FRAMES);
  /* max-bundle: one transport, one send stream */
  g_assert_cmpint (g_atomic_int_get (&p.n_nicesinks), ==, 1);
  g_assert_cmpint (g_atomic_int_get (&p.n_fec_encoders), ==, 1);
  if (tuned) {
    g_assert_cmpint (fec_buffers, ==, 0);
    g_assert_cmpint (fec_lists, ==, 0);
    g_assert_cmpint (sink_lists, >, 0);
    g_assert_cmpint (srtp_items, ==, 0);
    /* Before the bypass (the first packets may come before DTLS is seen up) the queue's. */
    g_assert_cmpint (jb_reader, >, 10 * jb_queue);
    g_assert_cmpint (jb_nicesrc, ==, 0);
    /* nicesrc stamps what it reads; so must the reader (rtpstorage kept untimed packets). */
    g_assert_cmpint (g_atomic_int_get (&p.jb_untimed), ==, 0);
  } else {
    /* The control: the lists reach rtpulpfecenc, whose default chain_list splits them. */
    g_assert_cmpint (fec_buffers + fec_lists, >, 0);
    g_assert_cmpint (sink_lists, ==, 0);
    g_assert_cmpint (srtp_items, >, 0);
    g_assert_cmpint (jb_reader + jb_nicesrc, ==, 0);
    g_assert_cmpint (jb_queue, >, 0);
  }

  g_clear_pointer (&bypass, sk_webrtc_receive_bypass_free);
  gst_element_set_state (p.pipeline, GST_STATE_NULL);
  /* @p goes out of scope: no late notify may reach it */
  g_signal_handlers_disconnect_by_data (p.sender, &p);
  g_signal_handlers_disconnect_by_data (p.receiver, &p);
  sk_webrtc_send_pad_release (p.send_pad);
  gst_object_unref (p.media);
  gst_object_unref (p.clock);
  gst_object_unref (p.pipeline);
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  g_test_init (&argc, &argv, NULL);
  sk_webrtc_warm_up ();

  g_test_add_data_func ("/webrtc-send/tuned", GINT_TO_POINTER (TRUE), test_send_path);
  g_test_add_data_func ("/webrtc-send/untuned", GINT_TO_POINTER (FALSE), test_send_path);
  return g_test_run ();
}
