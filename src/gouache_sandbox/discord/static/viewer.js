/* gouache sandbox viewer: channels, live messages, member actions, pool and queue.
 * Plain JavaScript, no build step, nothing loaded from outside this server. */
"use strict";

(() => {
  const API = "/viewer/api";
  const GROUP_WINDOW_S = 7 * 60;
  const AVATAR_COLORS = ["#5865f2", "#3ba55c", "#faa61a", "#eb459e", "#ed4245", "#1abc9c", "#9b59b6", "#e67e22"];

  const S = {
    guilds: [],
    guild: null,
    channelId: null,
    messages: new Map(), // channel id -> Map(message id -> view)
    gone: new Map(), // message id -> seq of its deletion
    unread: new Map(),
    memberId: localStorage.getItem("gouache.viewer.member") || null,
    suggest: { items: [], index: 0, appId: null },
    statusAt: 0,
    lastStatus: null,
  };

  const $ = (sel, el = document) => el.querySelector(sel);
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };

  // -- helpers -----------------------------------------------------------------------

  const big = (id) => BigInt(id);
  const cmpId = (a, b) => (big(a) < big(b) ? -1 : big(a) > big(b) ? 1 : 0);

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  function safeUrl(url) {
    if (typeof url !== "string") return null;
    if (url.startsWith("/") && !url.startsWith("//")) return url;
    return /^https?:\/\//i.test(url) ? url : null;
  }

  function hashColor(id) {
    let h = 0;
    for (const ch of String(id)) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
    return AVATAR_COLORS[h % AVATAR_COLORS.length];
  }

  function avatar(name, id, size) {
    const a = el("span", "avatar" + (size ? " " + size : ""), (name || "?").trim().charAt(0).toUpperCase());
    a.style.background = hashColor(id || name);
    return a;
  }

  function fmtTime(seconds) {
    const d = new Date(seconds * 1000);
    const now = new Date();
    const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return d.toDateString() === now.toDateString() ? `Today at ${hm}` : `${d.toLocaleDateString()} ${hm}`;
  }

  function colorHex(n) {
    return typeof n === "number" ? "#" + n.toString(16).padStart(6, "0") : null;
  }

  /* A small subset of Discord markdown: code, bold, italic, underline, strike,
   * links, mentions, timestamps, "-# " subtext. Input is escaped first. */
  function markdown(text, mentions) {
    const parts = String(text || "").split(/(```[\s\S]*?```|`[^`\n]+`)/g);
    return parts
      .map((part, i) => {
        if (i % 2 === 1) {
          if (part.startsWith("```")) {
            const body = part.slice(3, -3).replace(/^[a-z0-9_+-]*\n/i, "");
            return `<pre>${escapeHtml(body)}</pre>`;
          }
          return `<code>${escapeHtml(part.slice(1, -1))}</code>`;
        }
        let s = escapeHtml(part);
        s = s.replace(/&lt;@!?(\d+)&gt;/g, (_, id) => `<span class="mention">@${escapeHtml((mentions && mentions[id]) || id)}</span>`);
        s = s.replace(/&lt;t:(\d+)(?::[tTdDfFR])?&gt;/g, (_, t) => `<span class="mention">${escapeHtml(fmtTime(Number(t)))}</span>`);
        s = s.replace(/\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g, '<a href="$2" target="_blank" rel="noopener">$1</a>');
        s = s.replace(/\*\*([\s\S]+?)\*\*/g, "<strong>$1</strong>");
        s = s.replace(/__([\s\S]+?)__/g, "<u>$1</u>");
        s = s.replace(/(^|[^*])\*([^*\n]+)\*/g, "$1<em>$2</em>");
        s = s.replace(/(^|\W)_([^_\n]+)_(?=\W|$)/g, "$1<em>$2</em>");
        s = s.replace(/~~([\s\S]+?)~~/g, "<s>$1</s>");
        s = s.replace(/(^|\n)-# ([^\n]*)/g, '$1<span class="subtext">$2</span>');
        return s;
      })
      .join("");
  }

  /* Embed text with the bot's text progress bars (▰▰▱▱ 40%) drawn as real bars. */
  function richText(text, mentions) {
    const frag = document.createDocumentFragment();
    const lines = String(text || "").split("\n");
    let buffer = [];
    const flush = () => {
      if (!buffer.length) return;
      const span = el("div");
      span.innerHTML = markdown(buffer.join("\n"), mentions);
      frag.append(span);
      buffer = [];
    };
    for (const line of lines) {
      const m = line.match(/^\s*([▰▱█░▓▒■□]{4,})\s*(\d{1,3})\s*%\s*$/);
      if (m) {
        flush();
        frag.append(progressLine(Math.min(100, Number(m[2]))));
      } else {
        buffer.push(line);
      }
    }
    flush();
    return frag;
  }

  function progressLine(percent) {
    const line = el("div", "progress-line");
    const bar = el("div", "progress");
    bar.dataset.percent = String(percent);
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuenow", String(percent));
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    const fill = el("div", "fill");
    fill.style.width = percent + "%";
    bar.append(fill);
    line.append(bar, el("span", "pct", percent + "%"));
    return line;
  }

  async function getJSON(path) {
    const r = await fetch(API + path, { cache: "no-store" });
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  async function postJSON(path, body) {
    const r = await fetch(API + path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    let data = {};
    try {
      data = await r.json();
    } catch (_) {
      data = {};
    }
    if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
    return data;
  }

  let toastTimer = null;
  function toast(text, kind) {
    const t = $("#toast");
    t.textContent = text;
    t.className = kind || "";
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (t.hidden = true), kind === "error" ? 6000 : 2500);
  }

  // -- world: guilds, channels, members ---------------------------------------------------

  async function loadAll() {
    const data = await getJSON("/state");
    S.guilds = data.guilds;
    const fromHash = location.hash.slice(1);
    const all = S.guilds.flatMap((g) => g.channels.map((c) => [g, c]));
    const pick =
      all.find(([, c]) => c.id === S.channelId) ||
      all.find(([, c]) => c.id === fromHash || c.name === fromHash) ||
      all[0];
    if (!pick) {
      renderWorld();
      $("#messages").replaceChildren(emptyNote("No channels yet", "The sandbox has no guild with a channel."));
      return;
    }
    S.guild = pick[0];
    renderWorld();
    await selectChannel(pick[1].id);
  }

  function emptyNote(title, text) {
    const d = el("div", "empty-channel");
    d.append(el("b", null, title), document.createTextNode(text));
    return d;
  }

  function renderWorld() {
    const rail = $("#guilds");
    rail.replaceChildren(
      ...S.guilds.map((g) => {
        const initials = g.name.split(/\s+/).filter(Boolean).map((w) => [...w][0]).join("").slice(0, 3);
        const icon = el("div", "guild-icon" + (S.guild && g.id === S.guild.id ? " active" : ""), initials);
        icon.title = g.name;
        icon.onclick = () => {
          S.guild = g;
          renderWorld();
          if (g.channels[0]) selectChannel(g.channels[0].id);
        };
        return icon;
      }),
    );
    const g = S.guild;
    $("#guild-name").textContent = g ? g.name : "no guild";
    renderChannels();
    const members = g ? g.members : [];
    if (!members.find((m) => m.id === S.memberId)) S.memberId = members[0] ? members[0].id : null;
    const select = $("#member");
    select.replaceChildren(
      ...members.map((m) => {
        const o = el("option", null, m.name + (m.roles.length ? ` · ${m.roles.join(", ")}` : ""));
        o.value = m.id;
        o.selected = m.id === S.memberId;
        return o;
      }),
    );
    select.disabled = !members.length;
    renderActing();
  }

  function renderActing() {
    const g = S.guild;
    const members = g ? g.members : [];
    const me = members.find((m) => m.id === S.memberId);
    $("#acting-avatar").replaceWith(Object.assign(avatar(me ? me.name : "?", S.memberId, "sm"), { id: "acting-avatar" }));
    if (S.memberId) localStorage.setItem("gouache.viewer.member", S.memberId);
    $("#members").replaceChildren(
      ...members.map((m) => {
        const row = el("div", "member" + (m.id === S.memberId ? " active" : ""));
        row.dataset.id = m.id;
        row.title = `Act as ${m.name}`;
        row.append(avatar(m.name, m.id, "sm"), el("span", null, m.name));
        if (m.roles.length) row.append(el("span", "roles", m.roles.join(", ")));
        row.onclick = () => setMember(m.id);
        return row;
      }),
    );
    if (!members.length) $("#members").append(el("div", "muted", "No members to act as."));
    // A different member may be mentioned: refresh highlights.
    document.querySelectorAll(".msg").forEach((node) => {
      const msg = findMsg(node.dataset.id);
      if (msg) node.classList.toggle("mentioned", Boolean(S.memberId && msg.mentions[S.memberId]));
    });
  }

  function setMember(id) {
    S.memberId = id;
    $("#member").value = id;
    renderActing();
  }

  function renderChannels() {
    const g = S.guild;
    const list = $("#channels");
    list.replaceChildren(el("div", "channels-title", "Text channels"));
    if (!g) return;
    for (const c of g.channels) {
      const row = el("div", "channel" + (c.id === S.channelId ? " active" : ""));
      row.setAttribute("role", "listitem");
      row.dataset.id = c.id;
      row.append(el("span", "hash", "#"), el("span", "name", c.name));
      const n = S.unread.get(c.id) || 0;
      if (n && c.id !== S.channelId) row.append(el("span", "unread", n > 99 ? "99+" : n));
      row.onclick = () => selectChannel(c.id);
      list.append(row);
    }
  }

  function channelById(id) {
    for (const g of S.guilds) for (const c of g.channels) if (c.id === id) return [g, c];
    return [null, null];
  }

  async function selectChannel(id) {
    const [g, c] = channelById(id);
    if (!c) return;
    S.guild = g;
    S.channelId = id;
    S.unread.delete(id);
    history.replaceState(null, "", "#" + c.name);
    $("#channel-name").textContent = c.name;
    $("#channel-topic").textContent = c.topic || "";
    $("#input").placeholder = `Message #${c.name} — /imagine a lighthouse in a storm --ar 16:9`;
    renderChannels();
    const data = await getJSON(`/channels/${id}/messages?limit=300`);
    if (S.channelId !== id) return;
    for (const m of data.messages) upsert(m);
    renderMessages();
  }

  // -- messages ------------------------------------------------------------------------------

  function chanMap(channelId) {
    let map = S.messages.get(channelId);
    if (!map) S.messages.set(channelId, (map = new Map()));
    return map;
  }

  function findMsg(id) {
    for (const map of S.messages.values()) if (map.has(id)) return map.get(id);
    return null;
  }

  /* Keep the newest version of a message: live events and snapshots may cross. */
  function upsert(msg) {
    const gone = S.gone.get(msg.id);
    if (gone !== undefined && gone >= msg.seq) return false;
    const map = chanMap(msg.channel_id);
    const have = map.get(msg.id);
    if (have && have.seq > msg.seq) return false;
    map.set(msg.id, msg);
    return true;
  }

  function sorted(channelId) {
    return [...chanMap(channelId).values()].sort((a, b) => cmpId(a.id, b.id));
  }

  function nearBottom() {
    const box = $("#messages");
    return box.scrollHeight - box.scrollTop - box.clientHeight < 120;
  }

  function toBottom() {
    const box = $("#messages");
    box.scrollTop = box.scrollHeight;
  }

  function renderMessages() {
    const box = $("#messages");
    const msgs = sorted(S.channelId);
    if (!msgs.length) {
      const [, c] = channelById(S.channelId);
      box.replaceChildren(emptyNote(`Welcome to #${c ? c.name : "?"}`, "Type /imagine below as one of the members."));
      return;
    }
    box.replaceChildren(...msgs.map((m, i) => renderMessage(m, msgs[i - 1])));
    toBottom();
  }

  /* Re-render one message (and its follower, whose grouping may change) in place. */
  function refresh(msg, flash) {
    const box = $("#messages");
    const stick = nearBottom();
    const msgs = sorted(msg.channel_id);
    const i = msgs.findIndex((m) => m.id === msg.id);
    if (i < 0) return;
    if (!box.querySelector(".msg")) box.replaceChildren();
    const node = renderMessage(msg, msgs[i - 1]);
    if (flash) node.classList.add("flash");
    const old = box.querySelector(`.msg[data-id="${msg.id}"]`);
    if (old) {
      old.replaceWith(node);
    } else {
      const next = msgs[i + 1] && box.querySelector(`.msg[data-id="${msgs[i + 1].id}"]`);
      box.insertBefore(node, next || null);
    }
    const follower = msgs[i + 1];
    if (follower) {
      const fnode = box.querySelector(`.msg[data-id="${follower.id}"]`);
      if (fnode) fnode.replaceWith(renderMessage(follower, msg));
    }
    if (stick) toBottom();
  }

  function grouped(prev, m) {
    return Boolean(
      prev &&
        prev.author.id === m.author.id &&
        !m.interaction &&
        !m.reference &&
        !m.ephemeral_to &&
        !prev.ephemeral_to &&
        m.created_at - prev.created_at < GROUP_WINDOW_S,
    );
  }

  function renderMessage(m, prev) {
    const node = el("article", "msg");
    node.dataset.id = m.id;
    if (grouped(prev, m)) node.classList.add("grouped");
    if (m.ephemeral_to) node.classList.add("ephemeral");
    if (S.memberId && m.mentions[S.memberId]) node.classList.add("mentioned");

    if (m.interaction && m.interaction.user) {
      const ctx = el("div", "context interaction-line");
      ctx.append(avatar(m.interaction.user, m.interaction.user_id, "xs"), el("span", "who", m.interaction.user));
      if (m.interaction.name) {
        ctx.append(document.createTextNode(" used "), el("span", "cmd", "/" + m.interaction.name));
      } else {
        ctx.append(document.createTextNode(" clicked a button"));
      }
      node.append(ctx);
    } else if (m.reference) {
      const ref = findMsg(m.reference);
      const ctx = el("div", "context reply-line");
      if (ref) {
        ctx.append(avatar(ref.author.name, ref.author.id, "xs"), el("span", "who", ref.author.name));
        const span = el("span");
        span.innerHTML = markdown((ref.content || (ref.embeds[0] && ref.embeds[0].title) || "attachment").slice(0, 90), ref.mentions);
        ctx.append(span);
      } else {
        ctx.append(el("span", null, "Original message was deleted"));
      }
      node.append(ctx);
    }

    node.append(avatar(m.author.name, m.author.id));
    const body = el("div", "body");
    const meta = el("div", "meta");
    meta.append(el("span", "author", m.author.name));
    if (m.author.bot) meta.append(el("span", "bot-tag", "APP"));
    const time = el("time", null, fmtTime(m.created_at));
    time.dateTime = new Date(m.created_at * 1000).toISOString();
    meta.append(time);
    body.append(meta);

    const content = el("div", "content");
    if (m.loading) {
      content.className = "content thinking";
      content.append(document.createTextNode(`${m.author.name} is thinking`), el("span", "dots"));
    } else {
      content.innerHTML = markdown(m.content, m.mentions);
      if (m.edited_at && m.content) content.append(el("span", "edited", " (edited)"));
    }
    body.append(content);

    // Midjourney-style progress in the content: "… (42%) (fast)"
    const pct = !m.components.length && /\((\d{1,3})%\)/.exec(m.content || "");
    if (pct) body.append(progressLine(Math.min(100, Number(pct[1]))));

    const files = m.attachments.filter((a) => !a.in_embed);
    if (files.length) {
      const box = el("div", "attachments");
      for (const a of files) box.append(a.image ? image(a.url, a.filename) : fileLink(a));
      body.append(box);
    }
    if (m.embeds.length) {
      const box = el("div", "embeds");
      for (const e of m.embeds) box.append(renderEmbed(e, m.mentions));
      body.append(box);
    }
    if (m.components.length) body.append(renderComponents(m));
    if (m.ephemeral_to) {
      const note = el("div", "ephemeral-note");
      note.append(document.createTextNode("👁 Only "), el("b", null, m.ephemeral_to), document.createTextNode(" can see this"));
      body.append(note);
    }
    node.append(body);
    return node;
  }

  function image(url, alt) {
    const safe = safeUrl(url);
    if (!safe) return el("div", "broken", "image unavailable");
    const img = el("img");
    img.src = safe;
    img.alt = alt || "";
    img.loading = "eager";
    img.onload = () => {
      if (nearBottom()) toBottom();
    };
    img.onerror = () => img.replaceWith(el("div", "broken", "image failed to load"));
    img.onclick = () => {
      const lb = $("#lightbox");
      $("img", lb).src = safe;
      lb.hidden = false;
    };
    return img;
  }

  function fileLink(a) {
    const box = el("div", "file");
    const link = el("a", null, `📄 ${a.filename}`);
    link.href = safeUrl(a.url) || "#";
    link.target = "_blank";
    box.append(link, el("span", "muted", ` ${Math.ceil(a.size / 1024)} KB`));
    return box;
  }

  function renderEmbed(e, mentions) {
    const box = el("div", "embed");
    const bar = colorHex(e.color);
    if (bar) box.style.setProperty("--bar", bar);
    if (e.author && e.author.name) {
      const a = el("div", "embed-author");
      const icon = e.author.icon_url && safeUrl(e.author.icon_url);
      if (icon) a.append(Object.assign(el("img"), { src: icon, alt: "" }));
      a.append(el("span", null, e.author.name));
      box.append(a);
    }
    if (e.title) {
      const t = el("div", "embed-title");
      const url = safeUrl(e.url);
      if (url) {
        const link = el("a", null, e.title);
        link.href = url;
        link.target = "_blank";
        t.append(link);
      } else {
        t.innerHTML = markdown(e.title, mentions);
      }
      box.append(t);
    }
    if (e.description) {
      const d = el("div", "embed-description");
      d.append(richText(e.description, mentions));
      box.append(d);
    }
    if (Array.isArray(e.fields) && e.fields.length) {
      const grid = el("div", "embed-fields");
      for (const f of e.fields) {
        const cell = el("div", "embed-field" + (f.inline ? " inline" : ""));
        const name = el("div", "name");
        name.innerHTML = markdown(f.name, mentions);
        const value = el("div", "value");
        value.append(richText(f.value, mentions));
        cell.append(name, value);
        grid.append(cell);
      }
      box.append(grid);
    }
    if (e.thumbnail && (e.thumbnail.url || e.thumbnail.missing)) {
      const url = safeUrl(e.thumbnail.url);
      if (url) box.append(Object.assign(el("img", "thumb"), { src: url, alt: "" }));
    }
    if (e.image && (e.image.url || e.image.missing)) {
      const wrap = el("div", "embed-image");
      wrap.append(e.image.url ? image(e.image.url, "embed image") : el("div", "missing", `missing attachment ${e.image.missing}`));
      box.append(wrap);
    }
    if ((e.footer && e.footer.text) || e.timestamp) {
      const f = el("div", "embed-footer");
      const icon = e.footer && safeUrl(e.footer.icon_url);
      if (icon) f.append(Object.assign(el("img"), { src: icon, alt: "" }));
      const parts = [];
      if (e.footer && e.footer.text) parts.push(e.footer.text);
      if (e.timestamp) parts.push(fmtTime(Date.parse(e.timestamp) / 1000));
      f.append(el("span", null, parts.join(" • ")));
      box.append(f);
    }
    return box;
  }

  function renderComponents(m) {
    const wrap = el("div", "components");
    for (const row of m.components) {
      const r = el("div", "row");
      for (const c of row) {
        if (c.type !== 2) continue;
        if (c.style === 5) {
          const a = el("a", "btn s5", c.label);
          a.href = safeUrl(c.url) || "#";
          a.target = "_blank";
          a.rel = "noopener";
          r.append(a);
          continue;
        }
        const b = el("button", `btn s${c.style || 2}`);
        b.type = "button";
        b.dataset.customId = c.custom_id || "";
        if (c.emoji) b.append(el("span", "emoji", c.emoji));
        if (c.label) b.append(el("span", "label", c.label));
        b.disabled = c.disabled;
        b.onclick = () => press(m, c, b);
        r.append(b);
      }
      if (r.childElementCount) wrap.append(r);
    }
    return wrap;
  }

  async function press(m, c, button) {
    if (!S.memberId) return toast("Pick a member to act as first.", "error");
    button.classList.add("pending");
    try {
      const answer = await postJSON("/click", {
        member_id: S.memberId,
        message_id: m.id,
        custom_id: c.custom_id,
      });
      button.classList.add("pressed");
      toast(`${memberName()} pressed ${c.label || c.emoji || c.custom_id}`, "ok");
      if (answer && answer.modal) await fillModal(answer);
    } catch (err) {
      toast(err.message, "error");
    } finally {
      button.classList.remove("pending");
    }
  }

  // The app answered with a form (Custom Zoom, Remix): one prompt per text input.
  async function fillModal(answer) {
    const values = {};
    for (const input of answer.modal.inputs) {
      const typed = window.prompt(`${answer.modal.title} — ${input.label}`, input.value);
      if (typed === null) {
        await postJSON("/modal", {
          member_id: S.memberId,
          interaction_id: answer.interaction_id,
          close: true,
        });
        return toast("Form closed; nothing was sent.", "ok");
      }
      values[input.custom_id] = typed;
    }
    try {
      await postJSON("/modal", {
        member_id: S.memberId,
        interaction_id: answer.interaction_id,
        values,
      });
      toast(`${memberName()} sent the form`, "ok");
    } catch (err) {
      toast(err.message, "error");
    }
  }

  function memberName() {
    const m = S.guild && S.guild.members.find((x) => x.id === S.memberId);
    return m ? m.name : "?";
  }

  // -- live events ------------------------------------------------------------------------

  function onMessage(kind, msg) {
    if (!upsert(msg)) return;
    if (msg.channel_id === S.channelId) {
      refresh(msg, false);
    } else if (kind === "message_create") {
      S.unread.set(msg.channel_id, (S.unread.get(msg.channel_id) || 0) + 1);
      renderChannels();
    }
  }

  function onDelete(view) {
    S.gone.set(view.id, view.seq);
    const map = chanMap(view.channel_id);
    const had = map.get(view.id);
    map.delete(view.id);
    if (view.channel_id !== S.channelId || !had) return;
    const node = $(`#messages .msg[data-id="${view.id}"]`);
    const msgs = sorted(view.channel_id);
    const next = msgs.find((m) => cmpId(m.id, view.id) > 0);
    if (node) node.remove();
    if (next) refresh(next, false);
    if (!msgs.length) renderMessages();
  }

  function connect() {
    const conn = $("#conn");
    const es = new EventSource(API + "/events");
    es.addEventListener("hello", () => {
      conn.textContent = "live";
      conn.className = "conn live";
      loadAll().catch((err) => toast(err.message, "error"));
    });
    es.addEventListener("resync", () => loadAll().catch((err) => toast(err.message, "error")));
    for (const kind of ["message_create", "message_update"]) {
      es.addEventListener(kind, (ev) => onMessage(kind, JSON.parse(ev.data)));
    }
    es.addEventListener("message_delete", (ev) => onDelete(JSON.parse(ev.data)));
    es.addEventListener("status", (ev) => renderStatus(JSON.parse(ev.data)));
    es.onerror = () => {
      conn.textContent = "reconnecting…";
      conn.className = "conn down";
    };
  }

  // -- pool and queue ------------------------------------------------------------------------

  function isWorkerList(v) {
    return Array.isArray(v) && v.length > 0 && v.every((w) => w && typeof w === "object" && "name" in w);
  }

  function findWorkers(d) {
    if (!d || typeof d !== "object") return { key: null, list: [] };
    for (const key of ["workers", "pool"]) {
      if (isWorkerList(d[key])) return { key, list: d[key] };
      if (d[key] && typeof d[key] === "object" && isWorkerList(d[key].workers)) return { key, list: d[key].workers };
      if (Array.isArray(d[key])) return { key, list: d[key] };
    }
    for (const [key, v] of Object.entries(d)) if (isWorkerList(v)) return { key, list: v };
    return { key: null, list: [] };
  }

  function findQueue(d) {
    if (!d || typeof d !== "object") return { keys: [], depth: null, parts: {} };
    for (const key of ["queue_depth", "depth", "queued", "queue"]) {
      const v = d[key];
      if (typeof v === "number") return { keys: [key], depth: v, parts: {} };
      if (v && typeof v === "object" && !Array.isArray(v)) {
        const total = ["depth", "total", "queued", "size"].map((k) => v[k]).find((x) => typeof x === "number");
        const tiers = v.by_tier || v.tiers || v.per_tier;
        const parts = {};
        const source = tiers && typeof tiers === "object" ? tiers : v;
        for (const [k, x] of Object.entries(source)) if (typeof x === "number" && !["depth", "total", "queued", "size"].includes(k)) parts[k] = x;
        const sum = Object.values(parts).reduce((a, b) => a + b, 0);
        return { keys: [key], depth: typeof total === "number" ? total : sum, parts };
      }
    }
    return { keys: [], depth: null, parts: {} };
  }

  function latencyText(w) {
    const ms = typeof w.latency_ms === "number" ? w.latency_ms : typeof w.latency_s === "number" ? w.latency_s * 1000 : null;
    if (ms !== null) return ms < 1 ? "<1 ms" : ms < 10000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
    return w.latency !== undefined && w.latency !== null ? String(w.latency) : "—";
  }

  function renderWorker(w) {
    const row = el("div", "worker");
    row.dataset.name = String(w.name);
    const state = String(w.state || "unknown").toLowerCase();
    row.dataset.state = state;
    const top = el("div", "top");
    top.append(el("span", "wname", w.name));
    top.append(el("span", "state " + state.replace(/[^a-z_-]/g, ""), state));
    row.append(top);
    const bottom = el("div", "bottom");
    if (w.kind) bottom.append(el("span", "kind", w.kind));
    const cap = Number(w.capacity);
    const used = Number(w.in_flight) || 0;
    if (Number.isFinite(cap) && cap > 0) {
      const slots = el("div", "slots");
      for (let i = 0; i < Math.min(cap, 12); i++) slots.append(el("span", "slot" + (i < used ? " on" : "")));
      bottom.append(slots, el("span", "nums", `${used}/${cap}`));
    } else {
      bottom.append(el("span", "nums", `${used} in flight`));
    }
    bottom.append(el("span", "lat", "· " + latencyText(w)));
    if (typeof w.done_today === "number") bottom.append(el("span", "done", `· ${w.done_today} done`));
    row.append(bottom);
    const why = w.reason || w.last_error;
    if (why && state !== "ready" && state !== "busy") row.append(el("div", "why", why));
    return row;
  }

  function scalarText(v) {
    if (v === null || v === undefined) return "—";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(2);
    if (typeof v === "object") {
      if (Array.isArray(v)) return `${v.length} items`;
      return Object.entries(v)
        .filter(([, x]) => x === null || typeof x !== "object")
        .map(([k, x]) => `${k}: ${scalarText(x)}`)
        .join(", ");
    }
    return String(v);
  }

  function renderStatus(s) {
    S.lastStatus = s;
    S.statusAt = Date.now();
    const workersBox = $("#workers");
    const queueBox = $("#queue");
    if (!s || !s.configured) {
      queueBox.replaceChildren(el("div", "muted", "No status source connected."));
      workersBox.replaceChildren(el("div", "muted", "Give the viewer gouache's status: sandbox.viewer.set_status_source(...)"));
      $("#pool-summary").textContent = "";
      $("#extra-card").hidden = true;
      return;
    }
    const panel = $("#panel");
    const old = panel.querySelector(".error-box");
    if (old) old.remove();
    if (!s.ok) {
      const box = el("div", "error-box", "Status unavailable: " + s.error);
      panel.prepend(box);
      workersBox.classList.add("stale");
      queueBox.classList.add("stale");
      return;
    }
    workersBox.classList.remove("stale");
    queueBox.classList.remove("stale");
    const d = s.status || {};
    const workers = findWorkers(d);
    const queue = findQueue(d);

    const depth = el("div", "depth");
    depth.append(el("span", "n", queue.depth === null ? "—" : queue.depth), el("span", "label", "waiting"));
    const chips = el("div", "chips");
    for (const [k, v] of Object.entries(queue.parts)) {
      const c = el("span", "chip");
      c.append(document.createTextNode(k + " "), el("b", null, v));
      chips.append(c);
    }
    queueBox.replaceChildren(depth);
    if (chips.childElementCount) queueBox.append(chips);

    workersBox.replaceChildren(...workers.list.map(renderWorker));
    if (!workers.list.length) workersBox.append(el("div", "muted", "No workers."));
    const cap = workers.list.reduce((a, w) => a + (Number(w.capacity) || 0), 0);
    const used = workers.list.reduce((a, w) => a + (Number(w.in_flight) || 0), 0);
    $("#pool-summary").textContent = workers.list.length ? `${used}/${cap} busy` : "";

    const skip = new Set([workers.key, ...queue.keys]);
    const extra = $("#extra");
    extra.replaceChildren();
    if (Array.isArray(s.more)) {
      // The server words each field (status_text.py): counts and lists as sentences.
      for (const [label, text] of s.more) extra.append(el("dt", null, label), el("dd", null, text));
    } else {
      for (const [k, v] of Object.entries(d)) {
        if (skip.has(k)) continue;
        extra.append(el("dt", null, k.replace(/_/g, " ")), el("dd", null, scalarText(v)));
      }
    }
    $("#extra-card").hidden = !extra.childElementCount;
  }

  setInterval(() => {
    const age = $("#status-age");
    if (!S.statusAt || !S.lastStatus || !S.lastStatus.configured) {
      age.textContent = "";
      return;
    }
    const s = Math.round((Date.now() - S.statusAt) / 1000);
    age.textContent = s <= 1 ? "status updated just now" : `status updated ${s} s ago`;
  }, 1000);

  // -- the command box ---------------------------------------------------------------------

  function commands() {
    return S.guild ? S.guild.commands : [];
  }

  function updateSuggest() {
    const input = $("#input");
    const box = $("#suggest");
    const text = input.value;
    if (!text.startsWith("/")) {
      box.hidden = true;
      S.suggest.items = [];
      return;
    }
    const space = text.indexOf(" ");
    const typed = (space < 0 ? text.slice(1) : text.slice(1, space)).toLowerCase();
    let items;
    if (space < 0) {
      items = commands().filter((c) => c.name.startsWith(typed));
    } else {
      items = commands().filter((c) => c.name === typed && (!S.suggest.appId || c.application_id === S.suggest.appId));
      items = items.slice(0, 1);
    }
    S.suggest.items = items;
    S.suggest.index = Math.min(S.suggest.index, Math.max(0, items.length - 1));
    if (!items.length) {
      box.hidden = true;
      return;
    }
    box.replaceChildren(el("div", "head", space < 0 ? "Commands" : "Options"));
    items.forEach((c, i) => {
      const row = el("div", "sugg" + (i === S.suggest.index && space < 0 ? " active" : ""));
      row.append(el("span", "cname", "/" + c.name));
      for (const o of c.options) row.append(el("span", "opt" + (o.required ? " req" : ""), o.name));
      row.append(el("span", "desc", c.description), el("span", "app", c.application));
      row.onmousedown = (ev) => {
        ev.preventDefault();
        complete(c);
      };
      box.append(row);
    });
    box.hidden = false;
  }

  function complete(c) {
    const input = $("#input");
    S.suggest.appId = c.application_id;
    input.value = "/" + c.name + " ";
    input.focus();
    updateSuggest();
  }

  async function submit(ev) {
    ev.preventDefault();
    const input = $("#input");
    const text = input.value.trim();
    if (!text) return;
    if (!S.memberId) return toast("Pick a member to act as first.", "error");
    if (!text.startsWith("/")) return toast("Type a slash command, e.g. /imagine a red fox", "error");
    const name = text.slice(1).split(" ")[0].toLowerCase();
    const app = commands().find((c) => c.name === name && c.application_id === S.suggest.appId);
    try {
      const res = await postJSON("/command", {
        member_id: S.memberId,
        channel_id: S.channelId,
        text,
        application_id: app ? app.application_id : null,
      });
      input.value = "";
      S.suggest.appId = null;
      updateSuggest();
      toast(`${memberName()} used /${res.command} (${res.application})`, "ok");
    } catch (err) {
      toast(err.message, "error");
    }
  }

  function onKey(ev) {
    const items = S.suggest.items;
    const listing = !$("#suggest").hidden && !$("#input").value.includes(" ");
    if (!listing || !items.length) return;
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      const step = ev.key === "ArrowDown" ? 1 : -1;
      S.suggest.index = (S.suggest.index + step + items.length) % items.length;
      updateSuggest();
    } else if (ev.key === "Tab" || ev.key === "Enter") {
      const typed = $("#input").value.slice(1).trim().toLowerCase();
      if (ev.key === "Enter" && items.some((c) => c.name === typed)) return; // "/cmd" is sent as is
      ev.preventDefault();
      complete(items[S.suggest.index] || items[0]);
    } else if (ev.key === "Escape") {
      $("#suggest").hidden = true;
    }
  }

  // -- start -------------------------------------------------------------------------------

  $("#composer").addEventListener("submit", submit);
  $("#input").addEventListener("input", updateSuggest);
  $("#input").addEventListener("keydown", onKey);
  $("#input").addEventListener("blur", () => setTimeout(() => ($("#suggest").hidden = true), 150));
  $("#input").addEventListener("focus", updateSuggest);
  $("#member").addEventListener("change", (ev) => setMember(ev.target.value));
  $("#lightbox").addEventListener("click", () => ($("#lightbox").hidden = true));
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") $("#lightbox").hidden = true;
  });
  connect();
})();
