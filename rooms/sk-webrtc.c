/* streamkeeper: webrtcbin helpers shared by WHEP, WHIP and the test clients. */
#include "rooms/sk-webrtc.h"

#include <string.h>

#include <agent.h>
#include <gst/webrtc/nice/nicestream.h>
#include <gst/webrtc/nice/nicetransport.h>
#include <gst/webrtc/webrtc.h>

#include "common/sk-common.h"
#include "rooms/sk-srtp.h"

GST_DEBUG_CATEGORY_STATIC (sk_webrtc_debug);
#define GST_CAT_DEFAULT sk_webrtc_debug

/* RTCP bandwidth of a receiving session that sends NACKs: a 50 ms reporting interval. */
#define SK_WEBRTC_FEEDBACK_RR_BPS 40000
#define SK_WEBRTC_FEEDBACK_RS_BPS 8000

/* An SDP offer from a browser is a few KiB; 64 KiB leaves room for many m-lines. */
#define SK_WEBRTC_SDP_MAX_BYTES (64 * 1024)

void
sk_webrtc_configure_ice (GstElement *webrtcbin, const char *const *addresses, guint port_min,
                         guint port_max)
{
  g_return_if_fail (GST_IS_ELEMENT (webrtcbin));

  g_autoptr (GstWebRTCICE) ice = NULL;
  g_object_get (webrtcbin, "ice-agent", &ice, NULL);
  if (ice == NULL) {
    g_warning ("webrtcbin %s has no ICE agent", GST_ELEMENT_NAME (webrtcbin));
    return;
  }

  if (port_min != 0 || port_max != 0) {
    guint lo = port_min != 0 ? port_min : 1;
    guint hi = port_max != 0 ? port_max : 65535;
    if (lo > hi) {
      g_warning ("ICE port range %u-%u is empty, ignoring it", lo, hi);
    } else {
      /* max first: the ice object rejects a min above its current max */
      g_object_set (ice, "max-rtp-port", hi, NULL);
      g_object_set (ice, "min-rtp-port", lo, NULL);
    }
  }

  /* Only the libnice implementation has an "agent"; any other one keeps its defaults. */
  if (g_object_class_find_property (G_OBJECT_GET_CLASS (ice), "agent") == NULL) {
    g_warning ("ICE agent %s cannot be configured", G_OBJECT_TYPE_NAME (ice));
    return;
  }
  g_autoptr (GObject) agent_obj = NULL;
  g_object_get (ice, "agent", &agent_obj, NULL);
  g_return_if_fail (NICE_IS_AGENT (agent_obj));
  NiceAgent *agent = NICE_AGENT (agent_obj);

  /* A media server has no business opening ports on home routers, and UPnP discovery would
   * multicast SSDP on every interface, whatever addresses ICE is restricted to. */
  g_object_set (agent, "upnp", FALSE, NULL);

  if (addresses == NULL || addresses[0] == NULL)
    return;

  for (guint i = 0; addresses[i] != NULL; i++) {
    NiceAddress addr;
    nice_address_init (&addr);
    if (!nice_address_set_from_string (&addr, addresses[i])) {
      g_warning ("ignoring ICE address '%s': not an IP address", addresses[i]);
      continue;
    }
    /* Once one address is added libnice gathers on the added ones only, loopback included. */
    if (!nice_agent_add_local_address (agent, &addr))
      g_warning ("libnice refused local address %s", addresses[i]);
  }
}

/* The libnice agent and stream id under webrtcbin's bundle transport. */
static gboolean
ice_stream_of (GstElement *webrtcbin, NiceAgent **agent, guint *stream_id, GError **error)
{
  g_autoptr (GstWebRTCRTPTransceiver) trans = NULL;
  g_signal_emit_by_name (webrtcbin, "get-transceiver", 0, &trans);
  g_autoptr (GstWebRTCRTPReceiver) receiver = NULL;
  g_autoptr (GstWebRTCDTLSTransport) dtls = NULL;
  g_autoptr (GstWebRTCICETransport) ice_transport = NULL;
  if (trans != NULL)
    g_object_get (trans, "receiver", &receiver, NULL);
  if (receiver != NULL)
    g_object_get (receiver, "transport", &dtls, NULL);
  if (dtls != NULL)
    g_object_get (dtls, "transport", &ice_transport, NULL);
  if (ice_transport == NULL || !GST_IS_WEBRTC_NICE_TRANSPORT (ice_transport)) {
    g_set_error (error, SK_ERROR, SK_ERROR_UNSUPPORTED,
                 "the session has no libnice transport to restart");
    return FALSE;
  }
  GstWebRTCNiceStream *stream = GST_WEBRTC_NICE_TRANSPORT (ice_transport)->stream;
  g_autoptr (GstWebRTCICE) ice = NULL;
  g_object_get (webrtcbin, "ice-agent", &ice, NULL);
  if (stream == NULL || ice == NULL
      || g_object_class_find_property (G_OBJECT_GET_CLASS (ice), "agent") == NULL) {
    g_set_error (error, SK_ERROR, SK_ERROR_UNSUPPORTED, "the ICE agent is not libnice");
    return FALSE;
  }
  g_object_get (ice, "agent", agent, NULL);
  *stream_id = GST_WEBRTC_ICE_STREAM (stream)->stream_id;
  if (*agent == NULL)
    g_set_error (error, SK_ERROR, SK_ERROR_UNSUPPORTED, "the ICE agent has no libnice agent");
  return *agent != NULL;
}

gboolean
sk_webrtc_ice_restart (GstElement *webrtcbin, char **ufrag, char **pwd, GError **error)
{
  NiceAgent *agent = NULL;
  guint stream_id = 0;
  gboolean ok = FALSE;

  if (!ice_stream_of (webrtcbin, &agent, &stream_id, error))
    goto out;
  /* New local credentials; remote candidates other than the selected pair's are dropped and
   * the checks start again once the remote credentials are known. */
  ok = nice_agent_restart_stream (agent, stream_id)
       && nice_agent_get_local_credentials (agent, stream_id, ufrag, pwd);
  if (!ok)
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "libnice could not restart stream %u",
                 stream_id);
out:
  g_clear_object (&agent);
  return ok;
}

gboolean
sk_webrtc_ice_set_remote_credentials (GstElement *webrtcbin, const char *ufrag, const char *pwd,
                                      GError **error)
{
  NiceAgent *agent = NULL;
  guint stream_id = 0;
  gboolean ok = FALSE;

  if (ice_stream_of (webrtcbin, &agent, &stream_id, error)) {
    ok = nice_agent_set_remote_credentials (agent, stream_id, ufrag, pwd);
    if (!ok)
      g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "libnice refused the remote credentials");
  }
  g_clear_object (&agent);
  return ok;
}

char *
sk_webrtc_ice_get_local_candidates (GstElement *webrtcbin)
{
  NiceAgent *agent = NULL;
  guint stream_id = 0;
  GString *out = g_string_new (NULL);

  if (ice_stream_of (webrtcbin, &agent, &stream_id, NULL)) {
    /* Component 1 only: webrtcbin always muxes RTCP. */
    GSList *cands = nice_agent_get_local_candidates (agent, stream_id, 1);
    for (GSList *l = cands; l != NULL; l = l->next) {
      g_autofree char *line = nice_agent_generate_local_candidate_sdp (agent, l->data);
      if (line != NULL)
        g_string_append_printf (out, "%s\r\n", line);
    }
    g_slist_free_full (cands, (GDestroyNotify)nice_candidate_free);
  }
  g_clear_object (&agent);
  return g_string_free (out, FALSE);
}

/* Appsrc bounds of a send track. */
#define SK_WEBRTC_VIDEO_MAX_BUFFERS 300
#define SK_WEBRTC_VIDEO_MAX_BYTES (8 * 1024 * 1024)
#define SK_WEBRTC_AUDIO_MAX_BUFFERS 200
#define SK_WEBRTC_AUDIO_MAX_BYTES (256 * 1024)

void
sk_webrtc_warm_up (void)
{
  /* dtlsdec's first instance generates the certificate every webrtcbin shares. */
  static const char *const factories[] = {
    "webrtcbin",  "dtlsdec",         "dtlssrtpenc", "dtlssrtpdec", "nicesrc",    "nicesink",
    "rtph264pay", "rtph264depay",    "rtpvp8pay",   "rtpvp8depay", "rtpopuspay", "rtpopusdepay",
    "rtpbin",     "rtpjitterbuffer", "srtpenc",     "srtpdec",
  };
  gint64 start = g_get_monotonic_time ();

  for (guint i = 0; i < G_N_ELEMENTS (factories); i++) {
    GstElement *e = gst_element_factory_make (factories[i], NULL);
    if (e != NULL)
      gst_object_unref (gst_object_ref_sink (e));
  }
  g_debug ("WebRTC plugins loaded in %" G_GINT64_FORMAT " ms",
           (g_get_monotonic_time () - start) / 1000);
}

/* Links @srcpad to webrtcbin's sink_<@mline>: the pad named after the m-line index binds to
 * that m-line's transceiver, made sendonly with @rtp_caps as its codec preferences. */
static gboolean
link_send_mline (GstElement *webrtcbin, GstPad *srcpad, guint mline, GstCaps *rtp_caps,
                 gboolean nack, GError **error)
{
  g_autofree char *pad_name = g_strdup_printf ("sink_%u", mline);
  GstPadTemplate *templ
      = gst_element_class_get_pad_template (GST_ELEMENT_GET_CLASS (webrtcbin), "sink_%u");
  g_autoptr (GstPad) sinkpad = gst_element_request_pad (webrtcbin, templ, pad_name, rtp_caps);
  if (sinkpad == NULL || gst_pad_link (srcpad, sinkpad) != GST_PAD_LINK_OK) {
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "could not link to webrtcbin %s", pad_name);
    return FALSE;
  }
  g_autoptr (GstWebRTCRTPTransceiver) trans = NULL;
  g_object_get (sinkpad, "transceiver", &trans, NULL);
  if (trans != NULL)
    g_object_set (trans, "direction", GST_WEBRTC_RTP_TRANSCEIVER_DIRECTION_SENDONLY,
                  "codec-preferences", rtp_caps, "do-nack", nack, NULL);
  return TRUE;
}

/* The payloader of a send m-line, linked to webrtcbin's sink_<@mline> (whose transceiver it
 * configures); NULL with @error set. The payloader is in @bin. */
static GstElement *
add_payloader (GstBin *bin, GstElement *webrtcbin, SkTrackKind kind, const char *codec, guint mline,
               guint pt, GstCaps *rtp_caps, gboolean nack, GError **error)
{
  gboolean video = kind == SK_TRACK_KIND_VIDEO;
  gboolean vp8 = video && g_ascii_strcasecmp (codec, "VP8") == 0;
  gboolean h264 = video && !vp8;

  GstElement *pay = gst_element_factory_make (h264  ? "rtph264pay"
                                              : vp8 ? "rtpvp8pay"
                                                    : "rtpopuspay",
                                              NULL);
  if (pay == NULL) {
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "missing GStreamer payloader for %s", codec);
    return NULL;
  }
  g_object_set (pay, "pt", pt, NULL);
  if (h264) {
    gst_util_set_object_arg (G_OBJECT (pay), "aggregate-mode", "zero-latency");
    g_object_set (pay, "config-interval", -1, NULL);
  }
  gst_bin_add (bin, pay);

  g_autoptr (GstPad) srcpad = gst_element_get_static_pad (pay, "src");
  return link_send_mline (webrtcbin, srcpad, mline, rtp_caps, nack, error) ? pay : NULL;
}

/* What a send m-line announces while it carries forwarded packets: its caps, @pt and @ssrc. */
static GstCaps *
forwarded_rtp_caps (GstCaps *rtp_caps, guint pt, guint32 ssrc)
{
  GstCaps *caps = gst_caps_copy (rtp_caps);
  gst_caps_set_simple (caps, "payload", G_TYPE_INT, (int)pt, "ssrc", G_TYPE_UINT, ssrc, NULL);
  return caps;
}

static GstCaps *
send_src_caps (SkTrackKind kind, const char *codec)
{
  gboolean video = kind == SK_TRACK_KIND_VIDEO;
  gboolean vp8 = video && g_ascii_strcasecmp (codec, "VP8") == 0;
  return gst_caps_from_string (video && !vp8 ? "video/x-h264,stream-format=byte-stream,alignment=au"
                               : vp8         ? "video/x-vp8"
                                             : "audio/x-opus");
}

GstElement *
sk_webrtc_add_send_track (GstBin *bin, GstElement *webrtcbin, SkTrackKind kind, const char *codec,
                          guint mline, guint pt, GstCaps *rtp_caps, gboolean nack, guint32 rtp_ssrc,
                          GError **error)
{
  gboolean video = kind == SK_TRACK_KIND_VIDEO;

  GstElement *pay = NULL;
  if (rtp_ssrc == 0) {
    pay = add_payloader (bin, webrtcbin, kind, codec, mline, pt, rtp_caps, nack, error);
    if (pay == NULL)
      return NULL;
  }
  GstElement *appsrc = gst_element_factory_make ("appsrc", NULL);
  if (appsrc == NULL) {
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "appsrc is not installed");
    return NULL;
  }
  g_autoptr (GstCaps) src_caps
      = pay != NULL ? send_src_caps (kind, codec) : forwarded_rtp_caps (rtp_caps, pt, rtp_ssrc);
  g_object_set (
      appsrc, "is-live", TRUE, "format", GST_FORMAT_TIME, "do-timestamp", FALSE, "caps", src_caps,
      "max-buffers", (guint64)(video ? SK_WEBRTC_VIDEO_MAX_BUFFERS : SK_WEBRTC_AUDIO_MAX_BUFFERS),
      "max-bytes", (guint64)(video ? SK_WEBRTC_VIDEO_MAX_BYTES : SK_WEBRTC_AUDIO_MAX_BYTES),
      "max-time", (guint64)0, "block", FALSE, NULL);
  gst_util_set_object_arg (G_OBJECT (appsrc), "leaky-type", "downstream");
  gst_bin_add (bin, appsrc);
  if (pay == NULL) {
    g_autoptr (GstPad) srcpad = gst_element_get_static_pad (appsrc, "src");
    if (!link_send_mline (webrtcbin, srcpad, mline, rtp_caps, nack, error))
      return NULL;
  } else if (!gst_element_link (appsrc, pay)) {
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "could not link the %s payloader",
                 video ? "video" : "audio");
    return NULL;
  }
  return gst_object_ref (appsrc);
}

/* Upstream queries reaching a send pad: it stands for a live source without latency of its own
 * (what a live appsrc answered), so the pipeline's latency can be configured. */
static gboolean
send_pad_query (GstPad *pad, GstObject *parent, GstQuery *query)
{
  switch (GST_QUERY_TYPE (query)) {
    case GST_QUERY_LATENCY:
      gst_query_set_latency (query, TRUE, 0, GST_CLOCK_TIME_NONE);
      return TRUE;
    case GST_QUERY_CAPS: {
      g_autoptr (GstCaps) caps = gst_pad_get_current_caps (pad);
      if (caps == NULL)
        caps = gst_pad_get_pad_template_caps (pad);
      GstCaps *filter = NULL;
      gst_query_parse_caps (query, &filter);
      if (filter != NULL) {
        GstCaps *both = gst_caps_intersect_full (filter, caps, GST_CAPS_INTERSECT_FIRST);
        gst_caps_take (&caps, both);
      }
      gst_query_set_caps_result (query, caps);
      return TRUE;
    }
    default:
      return gst_pad_query_default (pad, parent, query);
  }
}

/* Upstream events that no handler took (QoS, reconfigure, …): nothing upstream to tell. */
static gboolean
send_pad_event (GstPad *pad, GstObject *parent, GstEvent *event)
{
  gst_event_unref (event);
  return TRUE;
}

/* The two ways a send pad can be linked (see sk_webrtc_send_pad_set_rtp). */
typedef struct {
  GstElement *pay;     /* the payloader, linked while frames are sent */
  GstPad *webrtc_sink; /* webrtcbin's sink_<mline> */
  GstCaps *rtp_caps;   /* what the pad announces while it sends RTP */
  GstCaps *frame_caps; /* the payloader's input, until the track's own caps come */
  guint32 ssrc;
  gboolean rtp;
} SendPadPath;

#define SEND_PAD_PATH "sk-send-pad-path"

static void
send_pad_path_free (gpointer data)
{
  SendPadPath *path = data;
  gst_clear_object (&path->pay);
  gst_clear_object (&path->webrtc_sink);
  gst_clear_caps (&path->rtp_caps);
  gst_clear_caps (&path->frame_caps);
  g_free (path);
}

GstPad *
sk_webrtc_add_send_pad (GstBin *bin, GstElement *webrtcbin, SkTrackKind kind, const char *codec,
                        guint mline, guint pt, GstCaps *rtp_caps, gboolean nack,
                        const char *stream_id, GError **error)
{
  GstElement *pay = add_payloader (bin, webrtcbin, kind, codec, mline, pt, rtp_caps, nack, error);
  if (pay == NULL)
    return NULL;

  /* One SSRC for the m-line, whichever way its packets are made. */
  SendPadPath *path = g_new0 (SendPadPath, 1);
  path->ssrc = g_random_int ();
  g_object_set (pay, "ssrc", path->ssrc, NULL);
  path->pay = gst_object_ref (pay);
  g_autoptr (GstPad) paysrc = gst_element_get_static_pad (pay, "src");
  path->webrtc_sink = gst_pad_get_peer (paysrc);
  path->rtp_caps = forwarded_rtp_caps (rtp_caps, pt, path->ssrc);
  path->frame_caps = send_src_caps (kind, codec);

  g_autoptr (GstCaps) src_caps = send_src_caps (kind, codec);
  g_autoptr (GstPadTemplate) templ
      = gst_pad_template_new ("src", GST_PAD_SRC, GST_PAD_ALWAYS, src_caps);
  g_autofree char *name = g_strdup_printf ("send_%u", mline);
  GstPad *pad = gst_pad_new_from_template (templ, name);
  gst_pad_set_query_function (pad, send_pad_query);
  gst_pad_set_event_function (pad, send_pad_event);
  g_autoptr (GstPad) paysink = gst_element_get_static_pad (pay, "sink");
  g_object_set_data_full (G_OBJECT (pad), SEND_PAD_PATH, path, send_pad_path_free);
  if (gst_pad_link (pad, paysink) != GST_PAD_LINK_OK) {
    gst_object_unref (pad);
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "could not link to the %s payloader",
                 sk_track_kind_to_string (kind));
    return NULL;
  }
  /* Stored as sticky events on the active pad: they go out before its first buffer (now if the
   * payloader is already active). A TIME segment from 0: PTS are @bin's running time. */
  gst_pad_set_active (pad, TRUE);
  gst_pad_push_event (pad, gst_event_new_stream_start (stream_id));
  gst_pad_push_event (pad, gst_event_new_caps (src_caps));
  GstSegment segment;
  gst_segment_init (&segment, GST_FORMAT_TIME);
  gst_pad_push_event (pad, gst_event_new_segment (&segment));
  return pad;
}

guint32
sk_webrtc_send_pad_get_ssrc (GstPad *pad)
{
  SendPadPath *path = g_object_get_data (G_OBJECT (pad), SEND_PAD_PATH);
  return path != NULL ? path->ssrc : 0;
}

gboolean
sk_webrtc_send_pad_set_rtp (GstPad *pad, gboolean rtp, guint16 *last_seq, guint32 *last_ts)
{
  SendPadPath *path = g_object_get_data (G_OBJECT (pad), SEND_PAD_PATH);
  if (path == NULL || path->rtp == rtp)
    return FALSE;

  g_autoptr (GstPad) paysink = gst_element_get_static_pad (path->pay, "sink");
  g_autoptr (GstPad) paysrc = gst_element_get_static_pad (path->pay, "src");
  if (rtp) {
    guint seq = 0, ts = 0;
    g_object_get (path->pay, "seqnum", &seq, "timestamp", &ts, NULL);
    *last_seq = (guint16)seq;
    *last_ts = ts;
    gst_pad_unlink (pad, paysink);
    gst_pad_unlink (paysrc, path->webrtc_sink);
    /* Sticky: it goes out, with the stream-start and segment, before the next packet. */
    gst_pad_push_event (pad, gst_event_new_caps (path->rtp_caps));
    gst_pad_link (pad, path->webrtc_sink);
  } else {
    /* The payloader numbers on from where it stopped: the peer's jitter buffer sees one jump.
     * Caps the payloader takes first, or the link is refused. */
    gst_pad_unlink (pad, path->webrtc_sink);
    gst_pad_push_event (pad, gst_event_new_caps (path->frame_caps));
    gst_pad_link (paysrc, path->webrtc_sink);
    gst_pad_link (pad, paysink);
  }
  path->rtp = rtp;
  return TRUE;
}

void
sk_webrtc_send_pad_release (GstPad *pad)
{
  if (pad == NULL)
    return;
  gst_pad_set_active (pad, FALSE);
  g_autoptr (GstPad) peer = gst_pad_get_peer (pad);
  if (peer != NULL)
    gst_pad_unlink (pad, peer);
  gst_object_unref (pad);
}

/* Send path: webrtcbin (1.22) puts clocksync ! FEC encoder bin (rtpulpfecenc ! rtpredenc) in
 * front of rtpbin for every send stream. See sk_webrtc_tune_send_path. */
typedef struct {
  gboolean checked;
  GstPad *fec_src; /* the idle FEC bin's source pad, or NULL: leave the stream alone */
} FecBypass;

static void
fec_bypass_free (gpointer data)
{
  FecBypass *b = data;
  gst_clear_object (&b->fec_src);
  g_free (b);
}

static gboolean
fec_encoders_idle (GstBin *fec_bin)
{
  gboolean idle = TRUE, found = FALSE;
  g_autoptr (GstIterator) it = gst_bin_iterate_elements (fec_bin);
  GValue item = G_VALUE_INIT;

  while (gst_iterator_next (it, &item) == GST_ITERATOR_OK) {
    GstElement *e = g_value_get_object (&item);
    GstElementFactory *factory = gst_element_get_factory (e);
    const char *name = factory != NULL ? GST_OBJECT_NAME (factory) : "";
    if (g_str_equal (name, "rtpulpfecenc")) {
      guint pt, percentage, important;
      g_object_get (e, "pt", &pt, "percentage", &percentage, "percentage-important", &important,
                    NULL);
      /* pt 255 (its default): no FEC payload type, every packet passes unchanged */
      idle = idle && (pt > 127 || (percentage == 0 && important == 0));
      found = TRUE;
    } else if (g_str_equal (name, "rtpredenc")) {
      gboolean allow_no_red_blocks;
      guint distance;
      g_object_get (e, "distance", &distance, "allow-no-red-blocks", &allow_no_red_blocks, NULL);
      /* no redundancy and no RED wrapping asked for: every packet passes unchanged */
      idle = idle && distance == 0 && !allow_no_red_blocks;
    } else {
      idle = FALSE; /* something we do not know: not ours to skip */
    }
    g_value_reset (&item);
  }
  g_value_unset (&item);
  return found && idle;
}

/* On clocksync's source pad: the first buffer finds what follows it; while that is an idle FEC
 * bin, buffers and lists are pushed straight out of the bin's source pad. Events take the
 * bin's way, so its source pad carries the stream's sticky events as before. */
static GstPadProbeReturn
fec_bypass_probe (GstPad *pad, GstPadProbeInfo *info, gpointer user_data)
{
  FecBypass *b = user_data;

  if (!b->checked) {
    b->checked = TRUE;
    g_autoptr (GstPad) peer = gst_pad_get_peer (pad);
    g_autoptr (GstObject) bin = peer != NULL ? gst_pad_get_parent (peer) : NULL;
    if (bin != NULL && GST_IS_BIN (bin) && fec_encoders_idle (GST_BIN (bin)))
      b->fec_src = gst_element_get_static_pad (GST_ELEMENT (bin), "src");
    GST_DEBUG_OBJECT (pad, "%s the FEC encoders", b->fec_src != NULL ? "bypassing" : "keeping");
  }
  if (b->fec_src == NULL)
    return GST_PAD_PROBE_OK;

  GstFlowReturn ret;
  if (info->type & GST_PAD_PROBE_TYPE_BUFFER_LIST)
    ret = gst_pad_push_list (b->fec_src, GST_PAD_PROBE_INFO_BUFFER_LIST (info));
  else
    ret = gst_pad_push (b->fec_src, GST_PAD_PROBE_INFO_BUFFER (info));
  info->data = NULL;
  GST_PAD_PROBE_INFO_FLOW_RETURN (info) = ret;
  return GST_PAD_PROBE_HANDLED;
}

static void
on_send_element_added (GstBin *webrtcbin, GstElement *element, gpointer user_data)
{
  GstElementFactory *factory = gst_element_get_factory (element);
  if (factory == NULL || !g_str_equal (GST_OBJECT_NAME (factory), "clocksync"))
    return;
  g_object_set (element, "sync", FALSE, NULL);
  g_autoptr (GstPad) src = gst_element_get_static_pad (element, "src");
  gst_pad_add_probe (src, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST,
                     fec_bypass_probe, g_new0 (FecBypass, 1), fec_bypass_free);
}

/* srtpenc and srtpdec are built inside dtlssrtpenc/dec before webrtcbin adds its transport
 * bins: they show up here, not in "element-added". */
static void
on_srtp_element_added (GstBin *webrtcbin, GstBin *sub_bin, GstElement *element, gpointer user_data)
{
  GstElementFactory *factory = gst_element_get_factory (element);
  const char *name = factory != NULL ? GST_OBJECT_NAME (factory) : "";
  gboolean ours;
  if (g_str_equal (name, "srtpenc"))
    ours = sk_srtp_take_over_srtpenc (element);
  else if (g_str_equal (name, "srtpdec"))
    ours = sk_srtp_take_over_srtpdec (element);
  else
    return;
  if (!ours)
    GST_WARNING_OBJECT (element, "not inside DTLS-SRTP as expected: its libsrtp does the work");
}

static void
ensure_debug_category (void)
{
  static gsize debug_init;
  if (g_once_init_enter (&debug_init)) {
    GST_DEBUG_CATEGORY_INIT (sk_webrtc_debug, "sk-webrtc", 0, "streamkeeper webrtcbin helpers");
    g_once_init_leave (&debug_init, 1);
  }
}

void
sk_webrtc_tune_send_path (GstElement *webrtcbin)
{
  ensure_debug_category ();
  g_signal_connect (webrtcbin, "element-added", G_CALLBACK (on_send_element_added), NULL);
}

void
sk_webrtc_use_own_srtp (GstElement *webrtcbin)
{
  ensure_debug_category ();
  g_signal_connect (webrtcbin, "deep-element-added", G_CALLBACK (on_srtp_element_added), NULL);
}

/* What went down the bundle session's input last; see sk_webrtc_filter_bundle_events. */
typedef struct {
  GMutex lock;
  gboolean have_segment;
  GstSegment segment;
  GHashTable *tos_mids; /* mids whose TOS event went through */
} BundleFilter;

static void
bundle_filter_free (gpointer data)
{
  BundleFilter *f = data;
  g_hash_table_unref (f->tos_mids);
  g_mutex_clear (&f->lock);
  g_free (f);
}

static GstPadProbeReturn
bundle_filter_probe (GstPad *pad, GstPadProbeInfo *info, gpointer user_data)
{
  BundleFilter *f = user_data;
  GstEvent *event = GST_PAD_PROBE_INFO_EVENT (info);
  GstPadProbeReturn ret = GST_PAD_PROBE_OK;

  g_mutex_lock (&f->lock);
  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_SEGMENT: {
      const GstSegment *segment;
      gst_event_parse_segment (event, &segment);
      if (f->have_segment && gst_segment_is_equal (&f->segment, segment)) {
        ret = GST_PAD_PROBE_DROP;
      } else {
        gst_segment_copy_into (segment, &f->segment);
        f->have_segment = TRUE;
      }
      break;
    }
    case GST_EVENT_FLUSH_STOP:
      f->have_segment = FALSE;
      break;
    case GST_EVENT_CUSTOM_DOWNSTREAM_STICKY: {
      const GstStructure *s = gst_event_get_structure (event);
      const char *mid = s != NULL && gst_structure_has_name (s, "GstWebRtcBinUpdateTos")
                            ? gst_structure_get_string (s, "mid")
                            : NULL;
      if (mid != NULL && g_hash_table_contains (f->tos_mids, mid))
        ret = GST_PAD_PROBE_DROP;
      else if (mid != NULL)
        g_hash_table_add (f->tos_mids, g_strdup (mid));
      break;
    }
    default:
      break;
  }
  g_mutex_unlock (&f->lock);
  return ret;
}

gboolean
sk_webrtc_filter_bundle_events (GstElement *webrtcbin)
{
  g_autoptr (GstElement) funnel = NULL;
  g_autoptr (GstIterator) it = gst_bin_iterate_elements (GST_BIN (webrtcbin));
  GValue item = G_VALUE_INIT;

  while (funnel == NULL && gst_iterator_next (it, &item) == GST_ITERATOR_OK) {
    GstElement *e = g_value_get_object (&item);
    GstElementFactory *factory = gst_element_get_factory (e);
    if (factory != NULL && g_str_equal (GST_OBJECT_NAME (factory), "rtpfunnel"))
      funnel = gst_object_ref (e);
    g_value_reset (&item);
  }
  g_value_unset (&item);
  if (funnel == NULL)
    return FALSE;
  g_autoptr (GstPad) src = gst_element_get_static_pad (funnel, "src");
  g_autoptr (GstPad) peer = src != NULL ? gst_pad_get_peer (src) : NULL;
  if (peer == NULL)
    return FALSE;
  BundleFilter *f = g_new0 (BundleFilter, 1);
  g_mutex_init (&f->lock);
  f->tos_mids = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  /* On the sink side: an event dropped there counts as delivered for the funnel's pad, whereas
   * one dropped on the source pad would stay pending and be retried before every buffer. */
  gst_pad_add_probe (peer, GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM, bundle_filter_probe, f,
                     bundle_filter_free);
  return TRUE;
}

/* One transport under sk_webrtc_bypass_receive_queues. */
typedef struct {
  NiceAgent *agent;
  guint stream_id, component_id;
  GstElement *queue;
  GstPad *queue_sink, *queue_src;
  GstPad *next; /* what the queue feeds: dtlssrtpdec's sink */
  /* The reader thread's own: */
  gboolean direct;
  GPtrArray *pending; /* of GstBuffer: read in this wakeup, not sent on yet */
  SkWebrtcReceiveBypass *bypass;
} ReceiveTransport;

struct _SkWebrtcReceiveBypass {
  GSource *flush;  /* FlushSource */
  GstClock *clock; /* the pipeline's, and its base time: packets carry their arrival */
  GstClockTime base_time;
  GMainContext *context;
  GThread *thread;
  gint stop; /* atomic */
  GPtrArray *transports;
};

static void
receive_transport_free (gpointer data)
{
  ReceiveTransport *t = data;
  g_object_unref (t->agent);
  gst_object_unref (t->queue);
  gst_object_unref (t->queue_sink);
  gst_object_unref (t->queue_src);
  gst_object_unref (t->next);
  for (guint i = 0; i < t->pending->len; i++)
    gst_buffer_unref (t->pending->pdata[i]);
  g_ptr_array_unref (t->pending);
  g_free (t);
}

/* Once the queue has run empty, each packet goes straight on. What the queue would still carry
 * are events, which the packets may overtake: after the DTLS handshake nothing comes that they
 * depend on. While webrtcbin blocks the queue's output (ICE not connected: after a restart,
 * before consent is renewed) packets go into the queue and are held as before; it then has to
 * run empty again, so that no packet overtakes another. */
static GstPad *
receive_transport_target (ReceiveTransport *t)
{
  if (GST_PAD_IS_BLOCKED (t->queue_src)) {
    t->direct = FALSE;
    return t->queue_sink;
  }
  if (!t->direct) {
    guint level = 0;
    g_object_get (t->queue, "current-level-buffers", &level, NULL);
    if (level > 0)
      return t->queue_sink;
    t->direct = TRUE;
  }
  return t->next;
}

/* The reader thread, inside the dispatch of libnice's socket source. */
static void
on_received (NiceAgent *agent, guint stream_id, guint component_id, guint len, gchar *data,
             gpointer user_data)
{
  ReceiveTransport *t = user_data;
  SkWebrtcReceiveBypass *b = t->bypass;
  (void)agent, (void)stream_id, (void)component_id;

  /* GLib takes a non-recursive source's fd out of the poll set around each dispatch and puts it
   * back, and each change signals the context's wakeup fd: two eventfd writes and one more
   * loop iteration per wakeup. Nothing here iterates this context, so there is nothing to
   * guard. (libnice may add sources for new sockets: each is set at its first packet.) */
  GSource *source = g_main_current_source ();
  if (source != NULL && !g_source_get_can_recurse (source))
    g_source_set_can_recurse (source, TRUE);

  GstBuffer *buffer = gst_buffer_new_allocate (NULL, len, NULL); /* one block, as nicesrc's */
  gst_buffer_fill (buffer, 0, data, len);
  /* As nicesrc (do-timestamp): the jitter buffer takes it as the arrival time, and rtpstorage
   * (FEC) keeps a packet for a time after it; untimed, it kept every one. */
  GST_BUFFER_DTS (buffer) = GST_BUFFER_PTS (buffer) = gst_clock_get_time (b->clock) - b->base_time;
  g_ptr_array_add (t->pending, buffer);
}

/* libnice reads a socket until it would block, a callback per packet. Sent on one by one, each
 * packet woke the jitter buffer's thread on the other core, which then fought us for its lock:
 * several futex calls per packet, more than the wakeups saved. So a wakeup's packets go on
 * together, before the next poll (GSource prepare). */
typedef struct {
  GSource source;
  SkWebrtcReceiveBypass *bypass;
} FlushSource;

static gboolean
flush_prepare (GSource *source, gint *timeout)
{
  SkWebrtcReceiveBypass *b = ((FlushSource *)source)->bypass;
  for (guint i = 0; i < b->transports->len; i++) {
    ReceiveTransport *t = b->transports->pdata[i];
    /* One by one: as a list they would reach elements that take a list for packets of one
     * kind (RTP and RTCP share the transport), and each buffer has to stay writable for SRTP.
     * Whatever it returns, reading goes on (as nicesrc's did). */
    for (guint j = 0; j < t->pending->len; j++)
      gst_pad_chain (receive_transport_target (t), t->pending->pdata[j]);
    g_ptr_array_set_size (t->pending, 0);
  }
  *timeout = -1;
  return FALSE;
}

static gboolean
flush_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  (void)source, (void)callback, (void)user_data;
  return G_SOURCE_CONTINUE;
}

static GSourceFuncs flush_funcs = { .prepare = flush_prepare, .dispatch = flush_dispatch };

static gpointer
receive_thread (gpointer data)
{
  SkWebrtcReceiveBypass *b = data;
  g_main_context_push_thread_default (b->context);
  /* Not a GMainLoop: a quit that comes before g_main_loop_run starts is lost. */
  while (!g_atomic_int_get (&b->stop))
    g_main_context_iteration (b->context, TRUE);
  g_main_context_pop_thread_default (b->context);
  return NULL;
}

/* The nicesrc upstream of @pad (through webrtcbin's capsfilter); NULL if there is none. */
static GstElement *
upstream_nicesrc (GstPad *pad)
{
  g_autoptr (GstPad) sink = gst_object_ref (pad);
  for (guint hops = 0; hops < 4; hops++) {
    g_autoptr (GstPad) peer = gst_pad_get_peer (sink);
    g_autoptr (GstElement) e = peer != NULL ? gst_pad_get_parent_element (peer) : NULL;
    if (e == NULL)
      return NULL;
    GstElementFactory *factory = gst_element_get_factory (e);
    if (factory != NULL && g_str_equal (GST_OBJECT_NAME (factory), "nicesrc"))
      return g_steal_pointer (&e);
    gst_object_unref (sink);
    sink = gst_element_get_static_pad (e, "sink");
    if (sink == NULL)
      return NULL;
  }
  return NULL;
}

/* The transport that @queue (a TransportReceiveBin's) belongs to; NULL if it is not linked as
 * nicesrc ! … ! queue ! next. */
static ReceiveTransport *
receive_transport_new (GstElement *queue)
{
  g_autoptr (GstPad) sink = gst_element_get_static_pad (queue, "sink");
  g_autoptr (GstPad) src = gst_element_get_static_pad (queue, "src");
  g_autoptr (GstPad) next = src != NULL ? gst_pad_get_peer (src) : NULL;
  g_autoptr (GstElement) nicesrc = sink != NULL ? upstream_nicesrc (sink) : NULL;
  if (next == NULL || nicesrc == NULL)
    return NULL;
  ReceiveTransport *t = g_new0 (ReceiveTransport, 1);
  g_object_get (nicesrc, "agent", &t->agent, "stream", &t->stream_id, "component", &t->component_id,
                NULL);
  if (t->agent == NULL) {
    g_free (t);
    return NULL;
  }
  t->queue = gst_object_ref (queue);
  t->queue_sink = g_steal_pointer (&sink);
  t->queue_src = g_steal_pointer (&src);
  t->next = g_steal_pointer (&next);
  t->pending = g_ptr_array_new ();
  return t;
}

SkWebrtcReceiveBypass *
sk_webrtc_bypass_receive_queues (GstElement *webrtcbin)
{
  g_autoptr (GstIterator) it
      = gst_bin_iterate_all_by_element_factory_name (GST_BIN (webrtcbin), "queue");
  GValue item = G_VALUE_INIT;
  g_autoptr (GPtrArray) transports = g_ptr_array_new_with_free_func (receive_transport_free);

  while (gst_iterator_next (it, &item) == GST_ITERATOR_OK) {
    GstElement *e = g_value_get_object (&item);
    GstObject *parent = GST_OBJECT_PARENT (e);
    ReceiveTransport *t = NULL;
    if (parent != NULL && g_str_equal (G_OBJECT_TYPE_NAME (parent), "TransportReceiveBin"))
      t = receive_transport_new (e);
    if (t != NULL)
      g_ptr_array_add (transports, t);
    g_value_reset (&item);
  }
  g_value_unset (&item);
  g_autoptr (GstClock) clock = gst_element_get_clock (webrtcbin);
  if (transports->len == 0 || clock == NULL)
    return NULL;

  SkWebrtcReceiveBypass *b = g_new0 (SkWebrtcReceiveBypass, 1);
  b->clock = g_steal_pointer (&clock);
  b->base_time = gst_element_get_base_time (webrtcbin);
  b->context = g_main_context_new ();
  b->transports = g_steal_pointer (&transports);
  for (guint i = 0; i < b->transports->len; i++)
    ((ReceiveTransport *)b->transports->pdata[i])->bypass = b;
  b->flush = g_source_new (&flush_funcs, sizeof (FlushSource));
  ((FlushSource *)b->flush)->bypass = b;
  g_source_attach (b->flush, b->context);
  b->thread = g_thread_new ("sk-rtc-rx", receive_thread, b);
  /* From here libnice reads these sockets in our thread; nicesrc's sits idle in its loop. */
  for (guint i = 0; i < b->transports->len; i++) {
    ReceiveTransport *t = b->transports->pdata[i];
    nice_agent_attach_recv (t->agent, t->stream_id, t->component_id, b->context, on_received, t);
  }
  return b;
}

guint
sk_webrtc_receive_bypass_get_n_transports (SkWebrtcReceiveBypass *b)
{
  return b->transports->len;
}

void
sk_webrtc_receive_bypass_free (SkWebrtcReceiveBypass *b)
{
  if (b == NULL)
    return;
  /* Detached, the sockets stay in our context unread until nicesrc takes them back when it
   * stops (READY to NULL): free this only as the pipeline stops. */
  for (guint i = 0; i < b->transports->len; i++) {
    ReceiveTransport *t = b->transports->pdata[i];
    nice_agent_attach_recv (t->agent, t->stream_id, t->component_id, b->context, NULL, NULL);
  }
  g_atomic_int_set (&b->stop, 1);
  g_main_context_wakeup (b->context);
  g_thread_join (b->thread);
  g_source_destroy (b->flush);
  g_source_unref (b->flush);
  g_ptr_array_unref (b->transports);
  g_main_context_unref (b->context);
  gst_object_unref (b->clock);
  g_free (b);
}

gboolean
sk_webrtc_media_has_nack (const GstSDPMedia *media, guint pt)
{
  g_autofree char *prefix = g_strdup_printf ("%u ", pt);
  for (guint i = 0; i < gst_sdp_media_attributes_len (media); i++) {
    const GstSDPAttribute *attr = gst_sdp_media_get_attribute (media, i);
    if (g_strcmp0 (attr->key, "rtcp-fb") != 0 || attr->value == NULL)
      continue;
    const char *fb = NULL;
    if (g_str_has_prefix (attr->value, prefix))
      fb = attr->value + strlen (prefix);
    else if (g_str_has_prefix (attr->value, "* "))
      fb = attr->value + 2;
    if (fb == NULL)
      continue;
    /* Plain "nack" only: "nack pli" is a keyframe request, not a retransmission request. */
    g_autofree char *kind = g_strstrip (g_strdup (fb));
    if (g_strcmp0 (kind, "nack") == 0)
      return TRUE;
  }
  return FALSE;
}

void
sk_webrtc_prompt_feedback (GstElement *rtpsession)
{
  g_object_set (rtpsession, "rtcp-rr-bandwidth", SK_WEBRTC_FEEDBACK_RR_BPS, "rtcp-rs-bandwidth",
                SK_WEBRTC_FEEDBACK_RS_BPS, NULL);
}

/* An SDP line is "<type>=<value>" with a single lower-case letter type (RFC 8866 §5). */
static gboolean
check_sdp_lines (const char *text, gsize len, guint *n_media, GError **error)
{
  gsize pos = 0;
  guint lineno = 0;

  *n_media = 0;
  while (pos < len) {
    const char *line = text + pos;
    const char *nl = memchr (line, '\n', len - pos);
    gsize line_len = nl != NULL ? (gsize)(nl - line) : len - pos;
    pos += line_len + (nl != NULL ? 1 : 0);
    lineno++;

    if (line_len > 0 && line[line_len - 1] == '\r')
      line_len--;
    if (line_len == 0)
      continue; /* tolerated: trailing blank lines are common */

    if (lineno == 1 && !(line_len == 3 && memcmp (line, "v=0", 3) == 0)) {
      g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "not an SDP: the first line must be \"v=0\"");
      return FALSE;
    }
    if (line_len < 2 || line[0] < 'a' || line[0] > 'z' || line[1] != '=') {
      g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                   "malformed SDP line %u: expected \"<letter>=<value>\"", lineno);
      return FALSE;
    }
    if (line[0] == 'm') {
      /* m=<media> <port> <proto> <fmt> ...: at least one format */
      guint tokens = 0;
      for (gsize i = 2; i < line_len; i++)
        if (line[i] != ' ' && (i == 2 || line[i - 1] == ' '))
          tokens++;
      if (tokens < 4) {
        g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                     "malformed SDP line %u: m= needs media, port, protocol and formats", lineno);
        return FALSE;
      }
      (*n_media)++;
    }
  }
  return TRUE;
}

gboolean
sk_webrtc_parse_sdp (const char *text, gsize len, GstSDPMessage **out, GError **error)
{
  g_return_val_if_fail (out != NULL, FALSE);
  *out = NULL;

  if (text == NULL || len == 0) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "empty SDP");
    return FALSE;
  }
  if (len > SK_WEBRTC_SDP_MAX_BYTES) {
    g_set_error (error, SK_ERROR, SK_ERROR_TOO_LARGE,
                 "SDP of %" G_GSIZE_FORMAT " bytes exceeds the limit of %u", len,
                 SK_WEBRTC_SDP_MAX_BYTES);
    return FALSE;
  }
  if (memchr (text, '\0', len) != NULL) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "SDP contains a NUL byte");
    return FALSE;
  }
  if (!g_utf8_validate_len (text, len, NULL)) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "SDP is not valid UTF-8");
    return FALSE;
  }

  guint n_media;
  if (!check_sdp_lines (text, len, &n_media, error))
    return FALSE;
  if (n_media == 0) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "SDP has no media section (m= line)");
    return FALSE;
  }

  GstSDPMessage *sdp = NULL;
  gst_sdp_message_new (&sdp);
  if (gst_sdp_message_parse_buffer ((const guint8 *)text, len, sdp) != GST_SDP_OK
      || gst_sdp_message_medias_len (sdp) != n_media) {
    gst_sdp_message_free (sdp);
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "SDP could not be parsed");
    return FALSE;
  }
  for (guint i = 0; i < n_media; i++) {
    const GstSDPMedia *media = gst_sdp_message_get_media (sdp, i);
    if (gst_sdp_media_get_media (media) == NULL || gst_sdp_media_formats_len (media) == 0) {
      gst_sdp_message_free (sdp);
      g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                   "SDP media section %u has no media type or no format", i);
      return FALSE;
    }
  }
  *out = sdp;
  return TRUE;
}

gboolean
sk_webrtc_media_rtpmap_is (const GstSDPMedia *media, guint pt, const char *encoding)
{
  g_autofree char *prefix = g_strdup_printf ("%u ", pt);
  gsize len = strlen (encoding);

  for (guint i = 0; i < gst_sdp_media_attributes_len (media); i++) {
    const GstSDPAttribute *attr = gst_sdp_media_get_attribute (media, i);
    if (g_strcmp0 (attr->key, "rtpmap") != 0 || attr->value == NULL
        || !g_str_has_prefix (attr->value, prefix))
      continue;
    const char *name = attr->value + strlen (prefix);
    return g_ascii_strncasecmp (name, encoding, len) == 0 && name[len] == '/';
  }
  return FALSE;
}

const char *
sk_webrtc_media_fmtp_get (const GstSDPMedia *media, guint pt, const char *key, char *buf,
                          gsize buf_len)
{
  gsize klen = strlen (key);

  for (guint i = 0; i < gst_sdp_media_attributes_len (media); i++) {
    const GstSDPAttribute *attr = gst_sdp_media_get_attribute (media, i);
    if (g_strcmp0 (attr->key, "fmtp") != 0 || attr->value == NULL)
      continue;
    char *end = NULL;
    guint64 fpt = g_ascii_strtoull (attr->value, &end, 10);
    if (end == attr->value || fpt != pt || *end != ' ')
      continue;
    g_auto (GStrv) params = g_strsplit (end + 1, ";", 64);
    for (guint j = 0; params[j] != NULL; j++) {
      const char *p = params[j];
      while (*p == ' ')
        p++;
      if (g_ascii_strncasecmp (p, key, klen) == 0 && p[klen] == '=') {
        g_strlcpy (buf, p + klen + 1, buf_len);
        g_strstrip (buf);
        return buf;
      }
    }
  }
  return NULL;
}

gboolean
sk_webrtc_parse_trickle_fragment (const char *data, gsize len, GHashTable *mid_to_mline,
                                  guint max_candidates, SkTrickleFragment *out, GError **error)
{
  guint mline = 0;

  memset (out, 0, sizeof *out);
  out->candidates = g_ptr_array_new_with_free_func (g_free);
  out->mlines = g_array_new (FALSE, FALSE, sizeof (guint));
  if (len > 0 && (memchr (data, '\0', len) != NULL || !g_utf8_validate_len (data, len, NULL))) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "the fragment is not text");
    return FALSE;
  }

  g_autofree char *text = g_strndup (data, len);
  g_auto (GStrv) lines = g_strsplit (text, "\n", 0);
  for (guint i = 0; lines[i] != NULL; i++) {
    char *line = g_strchomp (lines[i]);
    if (g_str_has_prefix (line, "a=ice-ufrag:")) {
      g_free (out->ufrag);
      out->ufrag = g_strdup (line + 12);
    } else if (g_str_has_prefix (line, "a=ice-pwd:")) {
      g_free (out->pwd);
      out->pwd = g_strdup (line + 10);
    } else if (g_str_has_prefix (line, "a=mid:")) {
      gpointer v = g_hash_table_lookup (mid_to_mline, line + 6);
      if (v == NULL) {
        out->stop = SK_TRICKLE_UNKNOWN_MID;
        break;
      }
      mline = GPOINTER_TO_UINT (v) - 1;
    } else if (g_str_has_prefix (line, "a=candidate:")) {
      if (out->candidates->len >= max_candidates) {
        out->stop = SK_TRICKLE_TOO_MANY_CANDIDATES;
        break;
      }
      g_ptr_array_add (out->candidates, g_strdup (line + 2));
      g_array_append_val (out->mlines, mline);
    }
  }
  return TRUE;
}

void
sk_trickle_fragment_clear (SkTrickleFragment *fragment)
{
  g_clear_pointer (&fragment->ufrag, g_free);
  g_clear_pointer (&fragment->pwd, g_free);
  g_clear_pointer (&fragment->candidates, g_ptr_array_unref);
  g_clear_pointer (&fragment->mlines, g_array_unref);
}
