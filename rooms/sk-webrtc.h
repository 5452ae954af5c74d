/* streamkeeper: webrtcbin helpers shared by WHEP, WHIP and the test clients. */
#pragma once

#include <gst/gst.h>
#include <gst/sdp/sdp.h>

G_BEGIN_DECLS

/*
 * Restricts webrtcbin's ICE agent to @addresses (NULL/empty: all) and to a port range
 * (0/0: any), via webrtcbin's ice-agent → GstWebRTCNice "agent" → nice_agent_add_local_address.
 * libnice ignores loopback unless told; tests pin 127.0.0.1. Call before set-remote-description.
 */
void sk_webrtc_configure_ice (GstElement *webrtcbin, const char *const *addresses, guint port_min,
                              guint port_max);

/* Parses an SDP text; FALSE with SK_ERROR_INVALID and a message that says what is wrong. */
gboolean sk_webrtc_parse_sdp (const char *text, gsize len, GstSDPMessage **out, GError **error);

G_END_DECLS
