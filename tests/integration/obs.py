"""OBS Studio (Debian's obs-studio, 29.x) as a real RTMP publisher for the integration tests.

OBS runs under its own Xvfb with HOME and XDG_CONFIG_HOME pointing at a temporary directory
that holds a generated profile (x264 CBR, 2 s keyframes, automatic reconnect), a custom RTMP
service (the node's URL and the ingress's stream key), and a scene collection whose only source
is an ffmpeg_source looping a generated clip (a moving test pattern with a sine tone), so the
stream carries changing video and AAC audio. global.ini marks the first run as done, so neither
the auto-configuration wizard nor any other first-run dialog waits for a click.

OBS's only connection is its RTMP output to the node on 127.0.0.1 (its websocket server stays
off), but Debian's OBS also tries to fetch obsproject.com's rtmp-services list at start, a
compile-time choice no setting turns off: run it only in a loopback-only network namespace
(`unshare -n`, as the suite runs), where that lookup fails at once and nothing leaves."""

import configparser
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import harness

OBS = shutil.which("obs")
XVFB = shutil.which("Xvfb")
FFMPEG = shutil.which("ffmpeg")

# OBS 29.0.2 as libobs encodes it (MAKE_SEMANTIC_VERSION: major << 24 | minor << 16 | patch):
# with a LastVersion present OBS does not offer the auto-configuration wizard.
LAST_VERSION = (29 << 24) | (0 << 16) | 2


def missing():
    """Why OBS cannot run here, or None."""
    for name, path in (("obs (Debian obs-studio)", OBS), ("Xvfb (Debian xvfb)", XVFB),
                       ("ffmpeg", FFMPEG)):
        if not path:
            return f"{name} is not installed (scripts/install-deps.sh --test installs it)"
    return None


def _ini(path, sections):
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # OBS's keys are case-sensitive
    for section, values in sections.items():
        cp[section] = {k: str(v).lower() if isinstance(v, bool) else str(v)
                       for k, v in values.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        cp.write(f, space_around_delimiters=False)


def make_clip(path, width, height, fps, seconds=10):
    """A looping source for OBS: testsrc2 (moves every frame) + a 440 Hz tone, 48 kHz stereo."""
    if Path(path).exists():
        return path
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={harness.SAMPLE_RATE}",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-g", str(fps),
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", str(harness.CHANNELS),
         "-ar", str(harness.SAMPLE_RATE), "-shortest", str(path)],
        check=True, timeout=60)
    return path


class ObsStudio:
    """One OBS Studio process (and its Xvfb) streaming to @server with @stream_key.

    x264 runs with OBS's defaults for what the profile does not name (preset veryfast, no
    profile/tune: x264's high profile with B-frames, so the node takes its transcode path, as
    for most OBS users) unless @x264_opts says otherwise (e.g. "bframes=0")."""

    PROFILE, COLLECTION, SCENE = "sk-test", "sk-test", "Scene"

    def __init__(self, procs, workdir, server, stream_key, width=harness.WIDTH,
                 height=harness.HEIGHT, fps=harness.FPS, bitrate_kbps=1500, audio=True,
                 retry_delay_s=2, max_retries=20, x264_opts=""):
        self.procs = procs
        self.workdir = Path(workdir)
        self.server, self.stream_key = server, stream_key
        self.width, self.height, self.fps = width, height, fps
        self.bitrate_kbps, self.audio = bitrate_kbps, audio
        self.retry_delay_s, self.max_retries = retry_delay_s, max_retries
        self.x264_opts = x264_opts
        self.home = self.workdir / "obs-home"
        self.config_dir = self.home / ".config"
        self.obs_dir = self.config_dir / "obs-studio"
        self.log_path = self.workdir / "obs.log"
        self.xvfb_log_path = self.workdir / "xvfb.log"
        self.xvfb = None
        self.proc = None
        self.display = None

    # --- configuration ------------------------------------------------------------------

    def write_config(self):
        clip = make_clip(self.workdir / f"obs-clip-{self.width}x{self.height}.mp4",
                         self.width, self.height, self.fps)
        _ini(self.obs_dir / "global.ini", {
            "General": {
                # FirstRun=true means "the first run is over" (OBSBasic::OBSInit).
                "FirstRun": True, "LastVersion": LAST_VERSION,
                "EnableAutoUpdates": False, "ConfirmOnExit": False, "MaxLogs": 2,
            },
            "Basic": {
                "Profile": self.PROFILE, "ProfileDir": self.PROFILE,
                "SceneCollection": self.COLLECTION, "SceneCollectionFile": self.COLLECTION,
            },
            "BasicWindow": {
                "WarnBeforeStartingStream": False, "WarnBeforeStoppingStream": False,
                "WarnBeforeStoppingRecord": False, "SysTrayEnabled": True,
                "SysTrayWhenStarted": False, "SaveProjectors": False,
                # No preview: software GL under Xvfb, keep OBS's CPU for encoding.
                "ShowTransitions": False, "PreviewEnabled": False,
            },
            "Video": {"Renderer": "OpenGL"},
        })
        profile = self.obs_dir / "basic" / "profiles" / self.PROFILE
        _ini(profile / "basic.ini", {
            "General": {"Name": self.PROFILE},
            "Output": {
                "Mode": "Advanced",
                "Reconnect": True, "RetryDelay": self.retry_delay_s,
                "MaxRetries": self.max_retries,
                "DelayEnable": False, "NewSocketLoopEnable": False, "LowLatencyEnable": False,
                "BindIP": "default",
            },
            "AdvOut": {
                "Encoder": "obs_x264", "ApplyServiceSettings": False, "Rescale": False,
                "TrackIndex": 1, "RecType": "Standard", "RecEncoder": "none",
                "Track1Bitrate": 160,
            },
            "Video": {
                "BaseCX": self.width, "BaseCY": self.height,
                "OutputCX": self.width, "OutputCY": self.height,
                "FPSType": 0, "FPSCommon": self.fps, "ScaleType": "bilinear",
                "ColorFormat": "NV12", "ColorSpace": "709", "ColorRange": "Partial",
            },
            "Audio": {"SampleRate": harness.SAMPLE_RATE, "ChannelSetup": "Stereo"},
        })
        (profile / "streamEncoder.json").write_text(json.dumps({
            "rate_control": "CBR", "bitrate": self.bitrate_kbps, "keyint_sec": 2,
            "preset": "veryfast", "x264opts": self.x264_opts,
        }))
        (profile / "service.json").write_text(json.dumps({
            "type": "rtmp_custom",
            "settings": {"server": self.server, "key": self.stream_key,
                         "use_auth": False, "bwtest": False},
        }))
        self._write_collection(clip)

    def _write_collection(self, clip):
        item = {
            "name": "Clip", "source_uuid": "00000000-0000-4000-8000-000000000002",
            "visible": True, "locked": False, "rot": 0.0, "pos": {"x": 0.0, "y": 0.0},
            "scale": {"x": 1.0, "y": 1.0}, "align": 5, "bounds_type": 0,
            "bounds_align": 0, "bounds": {"x": 0.0, "y": 0.0}, "crop_left": 0, "crop_top": 0,
            "crop_right": 0, "crop_bottom": 0, "id": 1, "group_item_backup": False,
            "scale_filter": "disable", "blend_method": "default", "blend_type": "normal",
            "show_transition": {"duration": 0}, "hide_transition": {"duration": 0},
            "private_settings": {},
        }
        scene = {
            "id": "scene", "versioned_id": "scene", "name": self.SCENE,
            "uuid": "00000000-0000-4000-8000-000000000001",
            "settings": {"id_counter": 1, "custom_size": False, "items": [item]},
            "mixers": 0, "sync": 0, "flags": 0, "volume": 1.0, "balance": 0.5,
            "enabled": True, "muted": False, "monitoring_type": 0, "private_settings": {},
        }
        clip_source = {
            "id": "ffmpeg_source", "versioned_id": "ffmpeg_source", "name": "Clip",
            "uuid": item["source_uuid"],
            "settings": {"is_local_file": True, "local_file": str(clip), "looping": True,
                         "restart_on_activate": False, "close_when_inactive": False,
                         "hw_decode": False, "clear_on_media_end": False},
            # Mixer track 1 (the streaming track) only when audio is wanted.
            "mixers": 1 if self.audio else 0, "sync": 0, "flags": 0, "volume": 1.0,
            "balance": 0.5, "enabled": True, "muted": not self.audio, "monitoring_type": 0,
            "private_settings": {},
        }
        collection = {
            "name": self.COLLECTION, "current_scene": self.SCENE,
            "current_program_scene": self.SCENE, "scene_order": [{"name": self.SCENE}],
            "sources": [scene, clip_source], "groups": [], "quick_transitions": [],
            "transitions": [], "current_transition": "Cut", "transition_duration": 0,
            "preview_locked": False, "scaling_enabled": False, "modules": {},
        }
        path = self.obs_dir / "basic" / "scenes" / f"{self.COLLECTION}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(collection, indent=1))

    # --- processes ----------------------------------------------------------------------

    def start_xvfb(self, timeout=15):
        # -displayfd: Xvfb picks a free display itself and reports it, so parallel runs
        # (which share /tmp/.X*-lock even in separate network namespaces) cannot collide.
        rfd, wfd = os.pipe()
        try:
            self.xvfb = self.procs.start(
                [XVFB, "-displayfd", str(wfd), "-screen", "0", "1024x768x24", "-nolisten",
                 "tcp", "-noreset"],
                self.xvfb_log_path, pass_fds=(wfd,))
            os.close(wfd)
            wfd = None
            deadline = time.monotonic() + timeout
            buf = b""
            while not buf.endswith(b"\n"):
                if time.monotonic() > deadline or self.xvfb.poll() is not None:
                    raise AssertionError(f"Xvfb did not start:\n{harness.tail(self.xvfb_log_path)}")
                chunk = os.read(rfd, 16)
                if not chunk:
                    raise AssertionError(f"Xvfb exited:\n{harness.tail(self.xvfb_log_path)}")
                buf += chunk
            self.display = f":{int(buf.strip())}"
        finally:
            os.close(rfd)
            if wfd is not None:
                os.close(wfd)
        return self.display

    def env(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("XDG_", "DBUS_", "WAYLAND_", "QT_", "PULSE_"))}
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.config_dir),
                   XDG_RUNTIME_DIR=str(self.workdir / "obs-runtime"), DISPLAY=self.display,
                   QT_QPA_PLATFORM="xcb", LIBGL_ALWAYS_SOFTWARE="1",
                   # No session bus, no sound server: OBS degrades to no tray/inhibit/pulse.
                   DBUS_SESSION_BUS_ADDRESS="disabled:", PULSE_SERVER="unix:/nonexistent",
                   LANG="C.UTF-8", LC_ALL="C.UTF-8")
        (self.workdir / "obs-runtime").mkdir(mode=0o700, exist_ok=True)
        return env

    def start(self):
        self.write_config()
        if self.display is None:
            self.start_xvfb()
        argv = [OBS, "--startstreaming", "--profile", self.PROFILE, "--collection",
                self.COLLECTION, "--scene", self.SCENE, "--minimize-to-tray", "--multi",
                "--disable-missing-files-check"]
        self.proc = self.procs.start(argv, self.log_path, env=self.env(), cwd=self.home)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def wait_log(self, pattern, timeout=30, count=1, what=None):
        """Waits until @pattern (a regex) occurs @count times in OBS's log; returns the matches."""
        rx = re.compile(pattern, re.M)

        def hits():
            if not self.running():
                raise AssertionError(f"OBS exited {self.proc.returncode}:\n"
                                     f"{harness.tail(self.log_path, 80)}")
            found = rx.findall(self.log())
            return found if len(found) >= count else None

        return harness.wait_until(hits, timeout, interval=0.1, what=what or f"OBS log /{pattern}/")

    def timed_log(self):
        """OBS's own log file (HH:MM:SS.mmm: message lines) from its config directory."""
        logs = sorted((self.obs_dir / "logs").glob("*.txt"))
        return logs[-1].read_text(errors="replace") if logs else ""

    def retry_gap(self):
        """Seconds between OBS's first "Disconnected from" and its next "Connecting to",
        from the timestamps of its log file (None if either is missing)."""
        stamps = {}
        for line in self.timed_log().splitlines():
            m = re.match(r"(\d+):(\d+):(\d+\.\d+): (.*)", line)
            if not m:
                continue
            t = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
            if "Disconnected from rtmp://" in m[4] and "lost" not in stamps:
                stamps["lost"] = t
            elif "Connecting to RTMP URL" in m[4] and "lost" in stamps:
                return t - stamps["lost"]
        return None

    def screenshot(self, path):
        """A PNG of the Xvfb screen (for looking at OBS's state while developing)."""
        subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "x11grab",
                        "-video_size", "1024x768", "-i", self.display, "-frames:v", "1",
                        str(path)], check=True, timeout=20,
                       env=dict(os.environ, DISPLAY=self.display))
        return path

    def stop(self, sig=signal.SIGINT, timeout=20):
        """Signals OBS and waits for it; returns its exit code (None if it had to be killed).

        OBS 29 on Linux quits cleanly on SIGINT (stops the stream: FCUnpublish, deleteStream,
        exit 0); SIGTERM kills it at once (-15, the connection just drops)."""
        rc = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                harness.ProcessGroup.signal(self.proc, signal.SIGKILL)
                self.proc.wait(timeout=5)
        elif self.proc is not None:
            rc = self.proc.returncode
        return rc

    def close(self):
        """Stops OBS (if still running) and Xvfb."""
        if self.running():
            harness.ProcessGroup.signal(self.proc, signal.SIGKILL)
            self.proc.wait(timeout=5)
        if self.xvfb is not None and self.xvfb.poll() is None:
            self.xvfb.terminate()
            try:
                self.xvfb.wait(timeout=5)
            except subprocess.TimeoutExpired:
                harness.ProcessGroup.signal(self.xvfb, signal.SIGKILL)
