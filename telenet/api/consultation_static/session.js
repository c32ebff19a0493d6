// The consultation session page: joins the hub's signalling channel for one consultation, calls every peer
// already present (audio/video from the camera and microphone, plus a data channel for short messages),
// and answers the peers who call. Parameters in the fragment: #request=<id>&token=<bearer>&say=<text>.

const params = new URLSearchParams(location.hash.slice(1));
const requestId = params.get("request");
const token = params.get("token");
const say = params.get("say") || "";
const $ = (id) => document.getElementById(id);
const peers = new Map(); // peer id -> {pc, channel}
let iceServers = [];
let localStream = null;
let socket = null;

function show(id, text) {
  $(id).textContent = text;
}

function send(to, data) {
  socket.send(JSON.stringify({ type: "signal", to, data }));
}

function wire(peerId, pc) {
  pc.onicecandidate = (event) => {
    if (event.candidate) send(peerId, { candidate: event.candidate.toJSON() });
  };
  pc.onconnectionstatechange = () => show("call", `${peerId}: ${pc.connectionState}`);
  pc.ontrack = (event) => {
    $("remote").srcObject = event.streams[0];
  };
  pc.ondatachannel = (event) => listen(peerId, event.channel);
}

function listen(peerId, channel) {
  peers.get(peerId).channel = channel;
  const greet = () => {
    if (say) channel.send(say);
  };
  if (channel.readyState === "open") greet();
  else channel.onopen = greet;
  channel.onmessage = (event) => show("received", `${peerId}: ${event.data}`);
}

function connection(peerId) {
  const pc = new RTCPeerConnection({ iceServers });
  peers.set(peerId, { pc, channel: null });
  wire(peerId, pc);
  if (localStream) localStream.getTracks().forEach((track) => pc.addTrack(track, localStream));
  return pc;
}

async function call(peerId) {
  const pc = connection(peerId);
  listen(peerId, pc.createDataChannel("consultation"));
  await pc.setLocalDescription(await pc.createOffer());
  send(peerId, { description: pc.localDescription.toJSON() });
}

async function onSignal(from, data) {
  let entry = peers.get(from);
  if (data.description) {
    if (!entry) {
      connection(from);
      entry = peers.get(from);
    }
    await entry.pc.setRemoteDescription(data.description);
    if (data.description.type === "offer") {
      await entry.pc.setLocalDescription(await entry.pc.createAnswer());
      send(from, { description: entry.pc.localDescription.toJSON() });
    }
  } else if (data.candidate && entry) {
    await entry.pc.addIceCandidate(data.candidate);
  }
}

const present = new Map();
function showPresence() {
  show("presence", [...present.values()].map((p) => `${p.name} (${p.institution})`).join(", "));
}

async function start() {
  try {
    localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  } catch (error) {
    localStream = null; // a data-only session still works
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // The token stays out of the URL: it is the socket's first message (a console page has its cookie instead).
  socket = new WebSocket(`${scheme}://${location.host}/api/v1/consultations/${requestId}/ws`);
  socket.onopen = () => {
    if (token) socket.send(JSON.stringify({ action: "auth", token }));
  };
  socket.onmessage = async (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "welcome") {
      iceServers = message.ice_servers;
      show("status", `已加入 (joined) as ${message.peer_id}`);
      message.peers.forEach((p) => present.set(p.peer_id, p));
      showPresence();
      for (const p of message.peers) await call(p.peer_id);
    } else if (message.type === "presence") {
      if (message.event === "joined") present.set(message.peer.peer_id, message.peer);
      else present.delete(message.peer.peer_id);
      showPresence();
    } else if (message.type === "signal") {
      await onSignal(message.from, message.data);
    } else if (message.type === "error") {
      show("status", `错误 (error): ${message.detail}`);
    }
  };
  socket.onclose = () => show("status", "已断开 (closed)");
}

start();
