#!/usr/bin/python3
"""Starts the real tray app under Xvfb and checks its tray item over D-Bus, against a REAL agent.

    tray_sni.py --bin PATH --control <agent data_dir>/control.json [--out DIR]

Bare Xvfb has no system tray, so this script provides the one thing a desktop panel would: an
org.kde.StatusNotifierWatcher on a private session bus (it re-runs itself under dbus-run-session).
libayatana-appindicator registers the app's StatusNotifierItem with it, and the checks then read
the item as a panel would: its properties, its icon pixels, and its com.canonical.dbusmenu menu.
They click menu items through dbusmenu's Event method, as a panel does on a real click, and read
the agent's state back with their own authorized request.

Needs: Xvfb, dbus-run-session, python3-gi (Gio), libX11; x11-utils and imagemagick for the window checks
and screenshot. Exit code 0 only when every check passed.
"""
import ctypes
import ctypes.util
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib

WATCHER = "org.kde.StatusNotifierWatcher"
WATCHER_XML = """
<node><interface name="org.kde.StatusNotifierWatcher">
  <method name="RegisterStatusNotifierItem"><arg type="s" direction="in"/></method>
  <method name="RegisterStatusNotifierHost"><arg type="s" direction="in"/></method>
  <property name="RegisteredStatusNotifierItems" type="as" access="read"/>
  <property name="IsStatusNotifierHostRegistered" type="b" access="read"/>
  <property name="ProtocolVersion" type="i" access="read"/>
  <signal name="StatusNotifierItemRegistered"><arg type="s"/></signal>
  <signal name="StatusNotifierItemUnregistered"><arg type="s"/></signal>
  <signal name="StatusNotifierHostRegistered"/>
</interface></node>
"""


def run_watcher():
    """The watcher process: owns the name, records items, drops them when their owner leaves."""
    from gi.repository import Gio, GLib

    items = []
    node = Gio.DBusNodeInfo.new_for_xml(WATCHER_XML)

    def on_call(conn, sender, path, iface, method, params, inv):
        if method == "RegisterStatusNotifierItem":
            arg = params.unpack()[0]
            item = sender + arg if arg.startswith("/") else arg
            if item not in items:
                items.append(item)
                conn.emit_signal(None, path, iface, "StatusNotifierItemRegistered",
                                 GLib.Variant("(s)", (item,)))
                # Forget the item when its bus name goes away (the app quit).
                owner = item.split("/", 1)[0]
                Gio.bus_watch_name_on_connection(
                    conn, owner, Gio.BusNameWatcherFlags.NONE, None,
                    lambda c, n, it=item: items.remove(it) if it in items else None)
        inv.return_value(None)

    def on_get(conn, sender, path, iface, prop):
        return {
            "RegisteredStatusNotifierItems": GLib.Variant("as", items),
            "IsStatusNotifierHostRegistered": GLib.Variant("b", True),
            "ProtocolVersion": GLib.Variant("i", 0),
        }[prop]

    def on_bus(conn, name):
        conn.register_object("/StatusNotifierWatcher", node.interfaces[0], on_call, on_get, None)

    Gio.bus_own_name(Gio.BusType.SESSION, WATCHER, Gio.BusNameOwnerFlags.NONE, on_bus, None, None)
    GLib.MainLoop().run()


# ---------- helpers for the checks ----------

class Fail(Exception):
    pass


def until(what, f, timeout=20.0):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            last = f()
        except Exception as e:  # the item may be mid-update
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise Fail(f"timed out waiting for {what} (last: {last!r})")


def png_pixel(path, x, y):
    """RGBA of one pixel of an 8-bit RGBA, non-interlaced PNG (what tray-icon writes)."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, _h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert (depth, ctype) == (8, 6), f"{path}: not 8-bit RGBA"
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, bpp = zlib.decompress(idat), w * 4, 4
    prev, row = bytearray(stride), None
    for r in range(y + 1):
        f, line = raw[r * (stride + 1)], bytearray(raw[r * (stride + 1) + 1:(r + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev, row = line, line
    return tuple(row[x * 4:x * 4 + 4])


def look_of(rgba):
    """Which tray icon a pixel on the badge's rim belongs to (see icons/tray-*.png)."""
    r, g, b, a = rgba
    if a < 128:
        return "transparent"
    if g > r + 60 and g > b + 30:
        return "contributing"  # green #1e9e57
    if r > 180 and g > 120 and b < 80:
        return "paused"  # amber #d99a00
    if abs(r - g) < 20 and abs(g - b) < 20:
        return "disconnected"  # grey #7a7a7a
    return f"unknown {rgba}"


class Session:
    """Synchronous D-Bus reads of the watcher and the app's item."""

    def __init__(self):
        from gi.repository import Gio, GLib
        self.Gio, self.GLib = Gio, GLib
        self.bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)

    def call(self, name, path, iface, method, sig=None, args=None, reply=None):
        v = self.bus.call_sync(name, path, iface, method,
                               self.GLib.Variant(sig, args) if sig else None,
                               self.GLib.VariantType.new(reply) if reply else None,
                               self.Gio.DBusCallFlags.NONE, 5000, None)
        return v.unpack() if v else None

    def prop(self, name, path, iface, prop):
        return self.call(name, path, "org.freedesktop.DBus.Properties", "Get", "(ss)",
                         (iface, prop))[0]

    def items(self):
        return self.prop(WATCHER, "/StatusNotifierWatcher", WATCHER,
                         "RegisteredStatusNotifierItems")

    def item_props(self, item):
        name, path = item.split("/", 1)
        return self.call(name, "/" + path, "org.freedesktop.DBus.Properties", "GetAll", "(s)",
                         ("org.kde.StatusNotifierItem",))[0]

    def menu(self, item):
        """(name, menu path, {label: id}) of the item's dbusmenu."""
        name = item.split("/", 1)[0]
        menu_path = self.item_props(item)["Menu"]
        _rev, layout = self.call(name, menu_path, "com.canonical.dbusmenu", "GetLayout",
                                 "(iias)", (0, -1, []), "(u(ia{sv}av))")
        labels = {}

        def walk(node):
            ident, props, children = node
            if "label" in props:
                labels[props["label"].replace("_", "")] = (ident, props.get("enabled", True))
            for c in children:
                walk(c)

        walk(layout)
        return name, menu_path, labels

    def click(self, item, label):
        name, menu_path, labels = self.menu(item)
        ident = labels[label][0]
        try:
            self.call(name, menu_path, "com.canonical.dbusmenu", "Event", "(isvu)",
                      (ident, "clicked", self.GLib.Variant("i", 0), 0))
        except self.GLib.GError as e:
            # "Quit" may end the app before its reply to the click leaves; the caller checks the
            # exit instead.
            if not (label == "Quit" and "NoReply" in str(e)):
                raise


def icon_path(props):
    """The PNG file the item's icon currently names."""
    name, theme = props.get("IconName", ""), props.get("IconThemePath", "")
    path = name if os.path.isabs(name) else os.path.join(theme, name)
    return path if path.endswith(".png") else path + ".png"


def icon_look(props):
    """The state the item's current icon shows, read from the icon file's pixels."""
    return look_of(png_pixel(icon_path(props), 8, 32))


def window_id(env, title):
    """The X window id of the top-level window with this title, or None."""
    out = subprocess.run(["xwininfo", "-name", title], env=env, capture_output=True, text=True)
    m = re.search(r"Window id: (0x[0-9a-f]+)", out.stdout)
    return int(m.group(1), 16) if m else None


def close_window(display, win):
    """Asks a window to close as a window manager does: a WM_DELETE_WINDOW client message (the
    close button, Alt+F4). Bare Xvfb has no window manager to send it. Xlib through ctypes."""
    x = ctypes.cdll.LoadLibrary(ctypes.util.find_library("X11"))
    x.XOpenDisplay.restype = ctypes.c_void_p
    x.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x.XInternAtom.restype = ctypes.c_ulong
    x.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long,
                             ctypes.c_void_p]
    x.XFlush.argtypes = [ctypes.c_void_p]
    x.XCloseDisplay.argtypes = [ctypes.c_void_p]

    class ClientMessage(ctypes.Structure):  # XClientMessageEvent, padded to sizeof(XEvent)
        _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong),
                    ("send_event", ctypes.c_int), ("display", ctypes.c_void_p),
                    ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                    ("format", ctypes.c_int), ("l", ctypes.c_long * 5),
                    ("pad", ctypes.c_long * 12)]

    dpy = x.XOpenDisplay(display.encode())
    if not dpy:
        raise Fail(f"cannot open display {display}")
    ev = ClientMessage(type=33, send_event=1, display=dpy, window=win, format=32,
                       message_type=x.XInternAtom(dpy, b"WM_PROTOCOLS", 0))
    ev.l[0] = x.XInternAtom(dpy, b"WM_DELETE_WINDOW", 0)
    x.XSendEvent(dpy, win, 0, 0, ctypes.byref(ev))
    x.XFlush(dpy)
    x.XCloseDisplay(dpy)


def children(pid):
    """Command names of a process's children (cut to 15 characters, as the kernel keeps them)."""
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "comm="], capture_output=True, text=True)
    return out.stdout.split()


def has_web_process(pid):
    return any(c.startswith("WebKitWebProc") for c in children(pid))


NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, always direct


def agent(control, method="GET", path="/v1/status", body=None):
    req = urllib.request.Request(control["url"].rstrip("/") + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + control["token"],
                                          "Content-Type": "application/json"})
    with NO_PROXY.open(req, timeout=5) as r:
        return json.loads(r.read())


def start_xvfb():
    r, w = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x900x24",
                             "-nolisten", "tcp"], pass_fds=(w,), stderr=subprocess.DEVNULL)
    os.close(w)
    display = b""
    while not display.endswith(b"\n"):
        chunk = os.read(r, 16)
        if not chunk:
            raise Fail("Xvfb did not start")
        display += chunk
    os.close(r)
    return xvfb, ":" + display.decode().strip()


def main():
    args = sys.argv[1:]
    opt = lambda k, d=None: args[args.index(k) + 1] if k in args else d  # noqa: E731
    binary, control_path = opt("--bin"), opt("--control", os.environ.get("AMBIENT_AGENT_CONTROL"))
    out = opt("--out", "target/test-output/tray")
    if not binary or not control_path:
        raise Fail("usage: tray_sni.py --bin PATH --control PATH [--out DIR]")
    os.makedirs(out, exist_ok=True)
    control = json.load(open(control_path))
    xvfb, display = start_xvfb()
    env = dict(os.environ, DISPLAY=display, GDK_BACKEND="x11", NO_AT_BRIDGE="1")
    env.pop("WAYLAND_DISPLAY", None)
    procs = [xvfb]
    watcher = subprocess.Popen([sys.executable, __file__, "watcher"], env=env)
    procs.append(watcher)
    s = Session()
    passed = []

    def ok(name):
        passed.append(name)
        print(f"ok - {name}", flush=True)

    def app(control_file):
        log = open(os.path.join(out, "tray-app.log"), "ab")
        p = subprocess.Popen([binary, "--control", control_file], env=env, stdout=log,
                             stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    try:
        # The app must find the watcher at start, or appindicator falls back to an XEmbed icon.
        until("the StatusNotifierWatcher", lambda: s.items() is not None, 10)

        # 1. No agent: grey icon, "Agent not running", toggle disabled.
        missing = os.path.join(out, "no-such-agent", "control.json")
        p = app(missing)
        item = until("the tray item to register (no agent)", lambda: (s.items() or [None])[0])
        ok("tray item registered with the StatusNotifierWatcher")
        props = s.item_props(item)
        if props.get("Status") != "Active":
            raise Fail(f"item status {props.get('Status')}")
        until("the grey icon", lambda: icon_look(s.item_props(item)) == "disconnected")
        labels = until("the no-agent menu", lambda: (lambda l: l if "Agent not running" in l else None)(s.menu(item)[2]))
        if labels["Pause contributing"][1] is not False:
            raise Fail(f"toggle should be disabled without an agent: {labels}")
        shutil.copy(icon_path(s.item_props(item)), os.path.join(out, "tray-icon-disconnected.png"))
        ok("no agent: grey icon, 'Agent not running', toggle disabled")
        s.click(item, "Quit")
        if p.wait(10) != 0:
            raise Fail(f"Quit exited with {p.returncode}")
        until("the item to go away", lambda: not s.items(), 10)
        ok("Quit ends the app and its tray item")

        # 1b. An agent that stopped leaves control.json behind: the same grey "not running".
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            dead_port = sock.getsockname()[1]
        stale = os.path.join(out, "stale-control.json")
        with open(stale, "w") as f:
            json.dump({"url": f"http://127.0.0.1:{dead_port}", "token": control["token"]}, f)
        p = app(stale)
        item = until("the tray item to register (stale file)", lambda: (s.items() or [None])[0])
        until("the grey icon (stale file)", lambda: icon_look(s.item_props(item)) == "disconnected")
        until("'Agent not running' (stale file)", lambda: "Agent not running" in s.menu(item)[2])
        ok("stopped agent (stale control.json): grey icon, 'Agent not running'")
        s.click(item, "Quit")
        if p.wait(10) != 0:
            raise Fail(f"Quit exited with {p.returncode}")
        until("the item to go away", lambda: not s.items(), 10)

        # 2. A real agent: green icon and the full menu.
        before = agent(control)
        if not before["settings"]["enabled"] or not before["contributing"]:
            raise Fail(f"the agent should start out contributing: {before}")
        p = app(control_path)
        item = until("the tray item to register", lambda: (s.items() or [None])[0])
        until("the green icon", lambda: icon_look(s.item_props(item)) == "contributing")
        labels = until("the contributing menu",
                       lambda: (lambda l: l if "Contributing" in l else None)(s.menu(item)[2]))
        rep = [label for label in labels if label.startswith("Reputation")]
        for want in ("Pause contributing", "Open dashboard", "Quit"):
            if want not in labels:
                raise Fail(f"menu lacks {want!r}: {list(labels)}")
        if not rep or "tasks" not in rep[0]:
            raise Fail(f"no reputation line: {list(labels)}")
        tasks = before["tasks_done"]
        if f"{tasks} tasks" not in rep[0]:
            raise Fail(f"reputation line {rep[0]!r} does not say {tasks} tasks")
        shutil.copy(icon_path(s.item_props(item)), os.path.join(out, "tray-icon-contributing.png"))
        ok(f"agent contributing: green icon, menu {sorted(labels)}")

        # 3. The menu's toggle pauses the agent; icon and menu follow.
        t0 = time.monotonic()
        s.click(item, "Pause contributing")
        while agent(control)["settings"]["enabled"] is not False:
            if time.monotonic() - t0 > 5:
                raise Fail("the agent did not pause within 5 s of the menu click")
            time.sleep(0.005)
        latency_ms = (time.monotonic() - t0) * 1000
        ok(f"menu 'Pause contributing' switched the agent off ({latency_ms:.0f} ms from click)")
        until("the amber icon", lambda: icon_look(s.item_props(item)) == "paused", 10)
        until("'Resume contributing' in the menu", lambda: "Resume contributing" in s.menu(item)[2], 10)
        shutil.copy(icon_path(s.item_props(item)), os.path.join(out, "tray-icon-paused.png"))
        ok("paused: amber icon, menu offers 'Resume contributing'")
        s.click(item, "Resume contributing")
        until("the agent to resume", lambda: agent(control)["settings"]["enabled"] is True, 5)
        until("the green icon again", lambda: icon_look(s.item_props(item)) == "contributing", 10)
        ok("menu 'Resume contributing' switched the agent back on")

        # 4. "Open dashboard" opens the window; screenshot it.
        s.click(item, "Open dashboard")
        if shutil.which("xwininfo"):
            until("the dashboard window", lambda: "Ambient VCP" in subprocess.run(
                ["xwininfo", "-root", "-tree"], env=env, capture_output=True, text=True).stdout, 15)
            ok("'Open dashboard' opened the dashboard window")
        if shutil.which("import") and shutil.which("convert"):
            shot = os.path.join(out, "tray-dashboard-window.png")

            def painted():
                # The webview's window starts blank (one colour); it has painted once its pixels
                # vary: the cards, text and chart.
                subprocess.run(["import", "-window", "Ambient VCP", shot], env=env, check=True,
                               capture_output=True)
                sd = subprocess.run(["convert", shot, "-format", "%[fx:standard_deviation]",
                                     "info:"], capture_output=True, text=True)
                return float(sd.stdout or 0) > 0.05

            until("the dashboard to paint", painted, 30)
            ok(f"the dashboard painted (screenshot {shot})")

        # 5. Closing the dashboard (as the close button does) leaves the tray running, and ends
        #    the webview's web process; "Open dashboard" makes a new one.
        if shutil.which("xwininfo"):
            if not has_web_process(p.pid):
                raise Fail(f"no web process under the app while the dashboard is open: {children(p.pid)}")
            close_window(display, window_id(env, "Ambient VCP"))
            until("the dashboard to close", lambda: window_id(env, "Ambient VCP") is None, 10)
            until("the web process to exit", lambda: not has_web_process(p.pid), 10)
            if p.poll() is not None:
                raise Fail(f"closing the dashboard ended the app ({p.returncode})")
            if item not in (s.items() or []):
                raise Fail("closing the dashboard removed the tray item")
            ok("closing the dashboard keeps the tray and ends the web process")
            s.click(item, "Open dashboard")
            until("the dashboard to open again", lambda: window_id(env, "Ambient VCP"), 15)
            ok("'Open dashboard' opens it again")

        s.click(item, "Quit")
        if p.wait(10) != 0:
            raise Fail(f"Quit exited with {p.returncode}")
        ok("Quit with the dashboard open ends the app")
        print(f"tray: {len(passed)} checks passed; output in {out}")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    if sys.argv[1:2] == ["watcher"]:
        run_watcher()
    elif "DBUS_SESSION_BUS_ADDRESS" not in os.environ or "--private-bus" not in sys.argv:
        # A private session bus, so the watcher and the item never touch the user's desktop.
        os.execvp("dbus-run-session", ["dbus-run-session", "--", sys.executable, __file__,
                                       "--private-bus", *sys.argv[1:]])
    else:
        try:
            main()
        except Fail as e:
            print(f"tray test FAILED: {e}", file=sys.stderr)
            sys.exit(1)
