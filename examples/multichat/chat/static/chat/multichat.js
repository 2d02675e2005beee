/*
 * The multichat client: plain JavaScript, no build step, one WebSocket.
 *
 * The socket (ws://host/chat/stream/) carries JSON frames {"stream",
 * "payload"}.  On the "rooms" stream the page sends {"command": "join" |
 * "leave" | "send", "room": id, ...} and gets {"join": id, "title",
 * "messages"}, {"leave": id}, {"scheduled": id, "delay"} or {"error",
 * "message"}.  On the "messages" stream -- the server's data binding -- it
 * gets {"action": "create" | "update" | "delete", "pk", "data"} for every
 * change of a message in a room it has joined, whoever made it (a page,
 * the admin, a management command), and sends {"action": "create", "data":
 * {"room", "text"}} to write and {"action": "delete", "pk"} to delete its
 * own; a refused one comes back as {"error", "action", "pk"}.
 *
 * "/remind in N seconds <text>" sends <text> N seconds later, through the
 * server's delay server.  When the socket drops, the page reconnects with
 * back-off and joins its rooms again.  User text only ever goes into the
 * page through textContent.  window.multichat.send(stream, payload) sends
 * a frame by hand, from the browser's console.
 */
(function () {
  "use strict";

  var RECONNECT_MIN_MS = 1000;
  var RECONNECT_MAX_MS = 30000;
  var REMIND = /^\/remind\s+in\s+(\d+)\s+seconds?\s+([\s\S]+)$/i;

  var app = document.getElementById("multichat");
  var chats = document.getElementById("chats");
  var template = document.getElementById("room-template");
  var statusText = document.getElementById("status");
  var errorText = document.getElementById("error");
  var myId = Number(app.dataset.userId);

  var socket = null;
  var failures = 0;
  var leaving = false;
  var panels = new Map(); // room id -> its <section>

  function setStatus(state, text) {
    statusText.dataset.state = state;
    statusText.textContent = text;
  }

  function showError(text) {
    errorText.textContent = text;
    errorText.hidden = !text;
  }

  function send(stream, payload) {
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      showError("Not connected: try again in a moment.");
      return false;
    }
    socket.send(JSON.stringify({ stream: stream, payload: payload }));
    return true;
  }

  function roomButton(roomId) {
    return app.querySelector('.room-link[data-room-id="' + roomId + '"]');
  }

  function formatTime(iso) {
    var date = new Date(iso);
    if (isNaN(date.getTime())) {
      return String(iso);
    }
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  // -- one message --------------------------------------------------------

  function render(pk, data) {
    var item = document.createElement("li");
    item.className = "message";
    item.dataset.id = String(pk);
    var time = document.createElement("time");
    var user = document.createElement("span");
    user.className = "user";
    var text = document.createElement("span");
    text.className = "text";
    item.append(time, " ", user, " ", text);
    fill(item, data);
    return item;
  }

  function fill(item, data) {
    var own = data.user === myId;
    item.classList.toggle("own", own);
    item.classList.toggle("announcement", data.user === null);
    item.querySelector("time").dateTime = data.created;
    item.querySelector("time").textContent = formatTime(data.created);
    item.querySelector(".user").textContent = data.username || "announcement";
    item.querySelector(".text").textContent = data.text;
    var button = item.querySelector(".delete");
    if (own && !button) {
      button = document.createElement("button");
      button.type = "button";
      button.className = "delete";
      button.textContent = "Delete";
      button.addEventListener("click", function () {
        send("messages", { action: "delete", pk: Number(item.dataset.id) });
      });
      item.append(button);
    } else if (!own && button) {
      button.remove();
    }
  }

  function upsert(pk, data) {
    if (!Number.isInteger(pk) || !data || typeof data.text !== "string") {
      return;
    }
    var panel = panels.get(data.room);
    if (!panel) {
      return; // a room this page has left meanwhile
    }
    var list = panel.querySelector(".messages");
    // Placed by id (the order they were saved in), never shown twice.
    var before = null;
    for (var item = list.lastElementChild; item; item = item.previousElementSibling) {
      var id = Number(item.dataset.id);
      if (id === pk) {
        fill(item, data);
        return;
      }
      if (id < pk) {
        break;
      }
      before = item;
    }
    list.insertBefore(render(pk, data), before);
    list.scrollTop = list.scrollHeight;
  }

  function removeMessage(pk) {
    panels.forEach(function (panel) {
      var item = panel.querySelector('.message[data-id="' + pk + '"]');
      if (item) {
        item.remove();
      }
    });
  }

  // -- rooms ---------------------------------------------------------------

  function openPanel(roomId, title) {
    var panel = panels.get(roomId);
    if (panel) {
      return panel;
    }
    panel = template.content.firstElementChild.cloneNode(true);
    panel.dataset.roomId = String(roomId);
    panel.querySelector(".title").textContent = title;
    panel.querySelector(".leave").addEventListener("click", function () {
      send("rooms", { command: "leave", room: roomId });
    });
    var form = panel.querySelector(".compose");
    var input = form.querySelector("input");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var text = input.value.trim();
      if (!text) {
        return;
      }
      var remind = REMIND.exec(text);
      var sent;
      if (remind) {
        sent = send("rooms", {
          command: "send", room: roomId, message: remind[2], delay: Number(remind[1]),
        });
      } else if (/^\/remind\b/i.test(text)) {
        showError("Write: /remind in 10 seconds what to say");
        return;
      } else {
        sent = send("messages", { action: "create", data: { room: roomId, text: text } });
      }
      if (sent) {
        input.value = "";
        showError("");
      }
    });
    panels.set(roomId, panel);
    chats.append(panel);
    var button = roomButton(roomId);
    if (button) {
      button.setAttribute("aria-pressed", "true");
    }
    return panel;
  }

  function closePanel(roomId) {
    var panel = panels.get(roomId);
    if (panel) {
      panel.remove();
      panels.delete(roomId);
    }
    var button = roomButton(roomId);
    if (button) {
      button.setAttribute("aria-pressed", "false");
    }
  }

  function onRooms(payload) {
    if (typeof payload.error === "string") {
      showError(payload.message || payload.error);
    } else if (Number.isInteger(payload.join)) {
      // The room's history, afresh: after a reconnection it replaces what
      // the panel showed (messages deleted meanwhile go away).
      openPanel(payload.join, String(payload.title)).querySelector(".messages").replaceChildren();
      (payload.messages || []).forEach(function (message) {
        upsert(message.pk, message.data);
      });
    } else if (Number.isInteger(payload.leave)) {
      closePanel(payload.leave);
    } else if (Number.isInteger(payload.scheduled)) {
      var panel = panels.get(payload.scheduled);
      if (panel) {
        var notice = panel.querySelector(".notice");
        notice.textContent = "Your message will be sent in " + payload.delay + " s.";
        notice.hidden = false;
      }
    }
  }

  function onMessages(payload) {
    if (typeof payload.error === "string") {
      showError(payload.error);
    } else if (payload.action === "delete") {
      removeMessage(payload.pk);
    } else if (payload.action === "create" || payload.action === "update") {
      upsert(payload.pk, payload.data);
    }
  }

  // -- the socket ----------------------------------------------------------

  function onFrame(event) {
    var frame;
    try {
      frame = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    if (!frame || typeof frame.payload !== "object" || frame.payload === null) {
      return;
    }
    if (frame.stream === "rooms") {
      onRooms(frame.payload);
    } else if (frame.stream === "messages") {
      onMessages(frame.payload);
    }
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    setStatus(failures ? "reconnecting" : "connecting", "connecting…");
    var opened = false;
    socket = new WebSocket(scheme + window.location.host + app.dataset.socketPath);
    socket.onopen = function () {
      opened = true;
      failures = 0;
      setStatus("connected", "connected");
      // After a reconnection: back into the rooms that were open.
      panels.forEach(function (panel, roomId) {
        send("rooms", { command: "join", room: roomId });
      });
    };
    socket.onmessage = onFrame;
    socket.onclose = function () {
      socket = null;
      if (leaving) {
        return;
      }
      var ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * Math.pow(2, failures));
      var delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
      failures += 1;
      setStatus("reconnecting", (opened ? "disconnected" : "could not connect") +
        ", trying again in " + Math.ceil(delay / 1000) + " s");
      window.setTimeout(connect, delay);
    };
  }

  app.querySelectorAll(".room-link").forEach(function (button) {
    button.addEventListener("click", function () {
      var roomId = Number(button.dataset.roomId);
      send("rooms", { command: panels.has(roomId) ? "leave" : "join", room: roomId });
    });
  });
  window.addEventListener("pagehide", function () {
    leaving = true;
  });

  window.multichat = { send: send };
  connect();
})();
