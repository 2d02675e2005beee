/*
 * The chat client of a room page: plain JavaScript, no build step.
 *
 * The page arrives with the room's recent history already rendered (from
 * the database).  This script opens ws://host/rooms/<slug>/?after=<id>,
 * where <id> is the newest message on the page, so the server sends the
 * messages saved since the page was rendered; then every message of the
 * room arrives as JSON {"id", "user", "text", "time"}.  Messages are placed
 * by id and never shown twice.  What is typed is sent as {"text": "..."}.
 *
 * When the socket drops, the script reconnects with exponential back-off
 * (1 s, 2 s, 4 s ... at most 30 s, with jitter so that clients do not all
 * come back at the same moment) and again asks for what it missed.
 *
 * User text only ever goes into the page through textContent: it is never
 * parsed as HTML.
 */
(function () {
  "use strict";

  var RECONNECT_MIN_MS = 1000;
  var RECONNECT_MAX_MS = 30000;

  var room = document.getElementById("room");
  var list = document.getElementById("messages");
  var form = document.getElementById("message-form");
  var input = document.getElementById("message-input");
  var sendButton = document.getElementById("send");
  var statusText = document.getElementById("status");
  var noMessages = document.getElementById("no-messages");
  var errorText = document.getElementById("error");
  var me = room.dataset.username;

  var socket = null;
  var failures = 0;
  var reconnectTimer = null;
  var leaving = false;

  function setStatus(state, text) {
    statusText.dataset.state = state;
    statusText.textContent = text;
    sendButton.disabled = state !== "connected";
  }

  function showError(text) {
    errorText.textContent = text;
    errorText.hidden = !text;
  }

  function formatTime(iso) {
    var date = new Date(iso);
    if (isNaN(date.getTime())) {
      return iso;
    }
    var time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    if (date.toDateString() === new Date().toDateString()) {
      return time;
    }
    return date.toLocaleDateString() + " " + time;
  }

  function newestId() {
    var items = list.querySelectorAll("li[data-id]");
    return items.length ? Number(items[items.length - 1].dataset.id) : 0;
  }

  function nearBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  }

  function render(message) {
    var item = document.createElement("li");
    item.className = message.user === me ? "message own" : "message";
    item.dataset.id = String(message.id);
    var time = document.createElement("time");
    time.dateTime = message.time;
    time.textContent = formatTime(message.time);
    var user = document.createElement("span");
    user.className = "user";
    user.textContent = message.user;
    var text = document.createElement("span");
    text.className = "text";
    text.textContent = message.text;
    item.append(time, " ", user, " ", text);
    return item;
  }

  function addMessage(message) {
    if (!Number.isInteger(message.id) || typeof message.user !== "string" ||
        typeof message.text !== "string" || typeof message.time !== "string") {
      return;
    }
    // Walk back from the newest: a message usually goes last.
    var before = null;
    for (var item = list.lastElementChild; item; item = item.previousElementSibling) {
      var id = Number(item.dataset.id);
      if (id === message.id) {
        return; // already shown
      }
      if (id < message.id) {
        break;
      }
      before = item;
    }
    var stick = nearBottom();
    list.insertBefore(render(message), before);
    noMessages.hidden = true;
    if (stick || message.user === me) {
      list.scrollTop = list.scrollHeight;
    }
  }

  function onMessage(event) {
    var data;
    try {
      data = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    if (data && typeof data.error === "string") {
      showError(data.error);
    } else if (data) {
      addMessage(data);
    }
  }

  function connect() {
    reconnectTimer = null;
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + window.location.host + room.dataset.socketPath + "?after=" + newestId();
    setStatus(failures ? "reconnecting" : "connecting", "connecting…");
    var opened = false;
    socket = new WebSocket(url);
    socket.onopen = function () {
      opened = true;
      failures = 0;
      showError("");
      setStatus("connected", "connected");
    };
    socket.onmessage = onMessage;
    socket.onclose = function () {
      socket = null;
      if (!leaving) {
        // Refused (logged out? room deleted?) or unreachable, versus dropped.
        scheduleReconnect(opened ? "disconnected" : "could not connect");
      }
    };
  }

  function scheduleReconnect(why) {
    var ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * Math.pow(2, failures));
    var delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
    failures += 1;
    setStatus("reconnecting", why + ", trying again in " + Math.ceil(delay / 1000) + " s");
    reconnectTimer = window.setTimeout(connect, delay);
  }

  function reconnectNow() {
    if (reconnectTimer !== null) {
      window.clearTimeout(reconnectTimer);
      connect();
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) {
      return;
    }
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      showError("Not connected: your message is kept, send it again once connected.");
      return;
    }
    socket.send(JSON.stringify({ text: text }));
    input.value = "";
    showError("");
  });

  // Back online, or back to a tab the browser had throttled: no need to
  // wait for the timer.
  window.addEventListener("online", reconnectNow);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") {
      reconnectNow();
    }
  });
  window.addEventListener("pagehide", function () {
    leaving = true;
  });
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) { // back from the back/forward cache
      leaving = false;
      if (!socket && reconnectTimer === null) {
        connect();
      }
    }
  });

  list.querySelectorAll("time[datetime]").forEach(function (time) {
    time.textContent = formatTime(time.dateTime);
  });
  list.scrollTop = list.scrollHeight;
  connect();
})();
