/* streamkeeper: webrtcbin helpers shared by WHEP, WHIP and the test clients. */
#pragma once

#include <gst/gst.h>
#include <gst/sdp/sdp.h>

#include "rooms/sk-track.h"

G_BEGIN_DECLS

/*
 * Restricts webrtcbin's ICE agent to @addresses (NULL/empty: all) and to a port range
 * (0/0: any), via webrtcbin's ice-agent → GstWebRTCNice "agent" → nice_agent_add_local_address.
 * libnice ignores loopback unless told; tests pin 127.0.0.1. Call before set-remote-description.
 */
void sk_webrtc_configure_ice (GstElement *webrtcbin, const char *const *addresses, guint port_min,
                              guint port_max);

/*
 * ICE restart (RFC 8445 §9) under webrtcbin 1.22, which cannot renegotiate ICE credentials
 * itself: these act on the libnice stream of the bundle transport (webrtcbin's "ice-agent" →
 * GstWebRTCNice "agent", stream of transceiver 0's GstWebRTCNiceTransport). DTLS, SRTP and
 * the RTP session are untouched, and libnice keeps sending on the selected pair until the
 * new checks pick one. Max-bundle sessions only (one stream).
 *
 * sk_webrtc_ice_restart: new local ufrag/pwd (returned, g_free them); the remote's candidates
 * are forgotten, so give it the new ones (add-ice-candidate) after
 * sk_webrtc_ice_set_remote_credentials. sk_webrtc_ice_get_local_candidates: "a=candidate:…"
 * lines (CRLF-terminated) of the stream, for the peer.
 */
gboolean sk_webrtc_ice_restart (GstElement *webrtcbin, char **ufrag, char **pwd, GError **error);
gboolean sk_webrtc_ice_set_remote_credentials (GstElement *webrtcbin, const char *ufrag,
                                               const char *pwd, GError **error);
char *sk_webrtc_ice_get_local_candidates (GstElement *webrtcbin);

/*
 * A sendonly m-line fed from an SkTrack: appsrc (live, leaky, bounded: a slow peer loses its
 * oldest buffers, the track's pushing thread never blocks) ! rtph264pay | rtpvp8pay |
 * rtpopuspay (by @codec: "H264", "VP8", "opus"; @pt)
 * → webrtcbin's sink_<@mline>, whose transceiver gets @rtp_caps (application/x-rtp, no
 * profile-level-id: the payloader's own must pass) as codec preferences, and NACK
 * retransmission if @nack. The appsrc takes video/x-h264 byte-stream/au, video/x-vp8 or
 * audio/x-opus with PTS in @bin's running time. With @rtp_ssrc != 0 there is no payloader:
 * the appsrc takes RTP packets (forwarded, rewritten to @rtp_ssrc and @pt: sk-rtp.h) with
 * @rtp_caps. Returns the appsrc (a new reference).
 */
/* Loads the WebRTC plugins and makes GStreamer's process-wide DTLS certificate (an RSA key:
 * ~100 ms in all), which the first peer connection of the process would otherwise wait for. */
void sk_webrtc_warm_up (void);

GstElement *sk_webrtc_add_send_track (GstBin *bin, GstElement *webrtcbin, SkTrackKind kind,
                                      const char *codec, guint mline, guint pt, GstCaps *rtp_caps,
                                      gboolean nack, guint32 rtp_ssrc, GError **error);

/*
 * The same m-line without appsrc and its streaming thread: returns a source pad of no element
 * (a new reference), linked to the payloader and active, that the caller pushes buffers into
 * with gst_pad_push from its own thread (the track's pushing thread: one thread hop and one
 * wakeup less per buffer and subscriber). Stream-start (@stream_id), default caps and a TIME
 * segment are stored on it; send new caps as a caps event. The pad answers latency queries as
 * a live source; upstream events (a keyframe request from the peer) go to its event function,
 * which drops them until the caller sets its own (gst_pad_set_event_function).
 * Nothing queues: push only once DTLS is connected (webrtcbin blocks the send path until the
 * SRTP keys are set, which would block the caller), and webrtcbin's send path (rtpbin, SRTP,
 * nicesink with sync=FALSE on non-blocking UDP sockets) never blocks after that. Release it
 * with sk_webrtc_send_pad_release once @bin is in NULL.
 */
GstPad *sk_webrtc_add_send_pad (GstBin *bin, GstElement *webrtcbin, SkTrackKind kind,
                                const char *codec, guint mline, guint pt, GstCaps *rtp_caps,
                                gboolean nack, const char *stream_id, GError **error);
void sk_webrtc_send_pad_release (GstPad *pad);

/*
 * A send pad carries encoded frames through its payloader, or (@rtp) RTP packets straight into
 * webrtcbin: forwarded packets (sk-rtp.h) rewritten to the pad's SSRC and payload type. The
 * pad then announces the m-line's caps with them; send the track's caps again after switching
 * back to frames. Only from the thread that pushes (or before any push). Switching to RTP sets
 * @last_seq and @last_ts to the payloader's last packet, for the packets to carry on from.
 * FALSE if the pad already had that form.
 */
gboolean sk_webrtc_send_pad_set_rtp (GstPad *pad, gboolean rtp, guint16 *last_seq,
                                     guint32 *last_ts);
guint32 sk_webrtc_send_pad_get_ssrc (GstPad *pad);

/*
 * The send path of a live source, already paced by its publisher. webrtcbin (1.22) puts a
 * clocksync (sync=TRUE) in front of each send stream, which would cost a clock wait, hence a
 * thread wakeup, for every buffer that comes a little early: turned off. After it comes an FEC
 * encoder bin (rtpulpfecenc ! rtpredenc), also when no FEC is negotiated; rtpulpfecenc has no
 * chain_list, so the payloader's buffer lists (a video frame's slices) fell apart there and the
 * RTP session, retransmission, SRTP and the UDP send all ran once per packet (nicesink sends a
 * list with one sendmmsg). While those encoders are idle, buffers and lists skip the bin. Call
 * right after creating @webrtcbin.
 */
void sk_webrtc_tune_send_path (GstElement *webrtcbin);

/* Once DTLS has keyed them, the RTP that @webrtcbin sends and receives is protected and
 * checked by sk-srtp.c, not by srtpenc's and srtpdec's libsrtp, which keep RTCP (see
 * sk_srtp_take_over_srtpenc/srtpdec). Call right after creating @webrtcbin. */
void sk_webrtc_use_own_srtp (GstElement *webrtcbin);

/*
 * Bundle: webrtcbin's rtpfunnel merges the m-lines' RTP into one session and, whenever a packet
 * comes from another m-line than the one before, sends the stream's SEGMENT and its
 * "GstWebRtcBinUpdateTos" event down again: with audio and video interleaved, 50-100 times a
 * second per peer, each through a dozen pads to nicesink, where the TOS event also costs a
 * transceiver lookup and setsockopt(IP_TOS). This drops, at the session's input, a SEGMENT
 * equal to the last one let through and a TOS event for a mid whose TOS was already applied
 * (valid while no sender's priority changes: the DSCP of a mid stays what it was). Call once
 * the session is linked (e.g. when connected); FALSE if @webrtcbin has no linked rtpfunnel
 * (no bundle), which is harmless.
 */
gboolean sk_webrtc_filter_bundle_events (GstElement *webrtcbin);

/*
 * Receive path: webrtcbin (1.22) reads each transport with nicesrc ! queue ! dtlssrtpdec. Per
 * wakeup nicesrc runs its own main loop and quits it for every packet (an eventfd write and a
 * futex broadcast each, and GLib's source blocking adds two writes and a loop iteration), then
 * the queue's thread runs SRTP, the RTP session and the jitter buffer's input: on a VM, where
 * each syscall costs, that was most of a WHIP publisher's CPU. This hands the transport's
 * sockets to a thread of our own (libnice reads them there, STUN included) that sends each
 * packet straight to dtlssrtpdec while the queue is empty and webrtcbin does not hold its
 * output, and into the queue otherwise. The queue is there for the start (it holds and leaks
 * what comes before the DTLS and SRTP elements are ready), and while ICE is not connected.
 * Call once DTLS is connected (connection-state "connected"); NULL if @webrtcbin has no
 * libnice transport. Free it before the pipeline stops (it joins the thread).
 */
typedef struct _SkWebrtcReceiveBypass SkWebrtcReceiveBypass;
SkWebrtcReceiveBypass *sk_webrtc_bypass_receive_queues (GstElement *webrtcbin);
/* The transports it reads (one with max-bundle). */
guint sk_webrtc_receive_bypass_get_n_transports (SkWebrtcReceiveBypass *bypass);
void sk_webrtc_receive_bypass_free (SkWebrtcReceiveBypass *bypass);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkWebrtcReceiveBypass, sk_webrtc_receive_bypass_free)

/* Parses an SDP text; FALSE with SK_ERROR_INVALID and a message that says what is wrong. */
gboolean sk_webrtc_parse_sdp (const char *text, gsize len, GstSDPMessage **out, GError **error);

/* Whether @pt's a=rtpmap names @encoding ("H264/90000" matches "H264", case-insensitively). */
gboolean sk_webrtc_media_rtpmap_is (const GstSDPMedia *media, guint pt, const char *encoding);

/*
 * For an rtpsession (webrtcbin's, found through deep-element-added) whose jitter buffers ask for
 * lost packets. A NACK goes out at once only if the last RTCP packet was a regular report or
 * one reporting interval has passed since (RFC 4585 §3.5.2); otherwise it waits. The interval
 * follows from the session bandwidth: rtpsession's default of 64 kbit/s makes it about 0.7 s,
 * past a jitter buffer's latency and the sender's retransmission history. 48 kbit/s of RTCP
 * makes it about 50 ms (AVPF lets rtpsession leave out the regular reports that carry nothing
 * new, so few more packets are sent).
 */
void sk_webrtc_prompt_feedback (GstElement *rtpsession);

/* Whether @media offers generic NACK feedback (a=rtcp-fb:PT nack, or a=rtcp-fb:* nack) for @pt:
 * plain "nack" only, "nack pli" asks for keyframes, not retransmissions. */
gboolean sk_webrtc_media_has_nack (const GstSDPMedia *media, guint pt);

/* The value of @key in @pt's a=fmtp line, copied into @buf (NULL if absent). */
const char *sk_webrtc_media_fmtp_get (const GstSDPMedia *media, guint pt, const char *key,
                                      char *buf, gsize buf_len);

/* Where parsing a trickle fragment stopped early; what came before it is filled in. */
typedef enum {
  SK_TRICKLE_COMPLETE,
  SK_TRICKLE_UNKNOWN_MID, /* a=mid: not in the session's offer */
  SK_TRICKLE_TOO_MANY_CANDIDATES,
} SkTrickleStop;

/* An application/trickle-ice-sdpfrag body (RFC 8840) as WHIP/WHEP PATCH requests carry it. */
typedef struct {
  char *ufrag, *pwd;     /* a=ice-ufrag / a=ice-pwd, NULL if absent */
  GPtrArray *candidates; /* "candidate:…" (char*) in order */
  GArray *mlines;        /* guint: the m-line index of each candidate */
  SkTrickleStop stop;
} SkTrickleFragment;

/*
 * Parses @data (@len bytes). @mid_to_mline maps each mid of the session to its m-line index + 1.
 * Parsing stops at the first unknown mid or at candidate number @max_candidates + 1, so callers
 * can report the first problem in the order the lines came. FALSE with SK_ERROR_INVALID if the
 * body is not text. Clear @out with sk_trickle_fragment_clear.
 */
gboolean sk_webrtc_parse_trickle_fragment (const char *data, gsize len, GHashTable *mid_to_mline,
                                           guint max_candidates, SkTrickleFragment *out,
                                           GError **error);
void sk_trickle_fragment_clear (SkTrickleFragment *fragment);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (SkTrickleFragment, sk_trickle_fragment_clear)

G_END_DECLS
