// The /v1 API as the console calls it: JSON with Content-Type application/json, the bearer
// token (kept in sessionStorage) on every call, server-sent events read through fetch (so the
// token is sent too), downloads through a Blob.

const TOKEN_KEY = 'ledger.token';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

function headers(extra = {}) {
  const result = { Accept: 'application/json', ...extra };
  const bearer = token.get();
  if (bearer) result.Authorization = `Bearer ${bearer}`;
  return result;
}

async function failure(response) {
  let code = 'http_error';
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch (_) { /* not JSON */ }
  return new ApiError(response.status, code, message);
}

export async function api(path, { method = 'GET', body, signal } = {}) {
  const options = { method, headers: headers(), signal, credentials: 'omit' };
  if (body !== undefined) {
    options.headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (!response.ok) throw await failure(response);
  return response.json();
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

// Follow /v1/events/stream (with `params` as filters), calling onEvent(event) for each event;
// reconnects (with Last-Event-ID) every second until signal aborts. onOpen() is called on
// each connection, onLost(error) when one fails or ends.
export async function follow(params, onEvent, signal, onOpen = () => {}, onLost = () => {}) {
  let last = null;
  while (!signal.aborted) {
    try {
      const extra = last === null ? {} : { 'Last-Event-ID': String(last) };
      const response = await fetch(`/v1/events/stream${query(params)}`, {
        headers: headers({ ...extra, Accept: 'text/event-stream' }), signal, credentials: 'omit',
      });
      if (!response.ok) throw await failure(response);
      onOpen();
      last = await readFrames(response.body, onEvent, last);
      if (!signal.aborted) onLost(new Error('the stream ended'));
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) throw error;
      onLost(error);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function readFrames(body, onEvent, last) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return last;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let data = '';
      for (const line of frame.split('\n')) {
        if (line.startsWith('id: ')) last = Number(line.slice(4));
        else if (line.startsWith('data: ')) data += line.slice(6);
      }
      if (data && data.startsWith('{')) onEvent(JSON.parse(data));
    }
  }
}

// Fetch a file (with the token) and hand it to the browser as a download.
export async function download(path, filename) {
  const response = await fetch(path, { headers: headers({ Accept: '*/*' }), credentials: 'omit' });
  if (!response.ok) throw await failure(response);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return blob.size;
}
