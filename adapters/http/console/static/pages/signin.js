// Sign in: principals are configured, so the API needs a bearer token. It is kept in this
// tab's sessionStorage only and sent as Authorization: Bearer on each call.

import { token } from '../api.js';
import { h } from '../dom.js';

export function render(main, { message, onSignedIn }) {
  const input = h('input', {
    type: 'password', id: 'token', autocomplete: 'off', placeholder: 'bearer token', required: true,
  });
  const form = h('form', { class: 'signin card', id: 'signin' },
    h('h2', {}, 'Sign in'),
    h('p', {}, 'This ledger has principals configured: enter your API token. '
      + 'It stays in this browser tab (sessionStorage) and is sent with each API call.'),
    message ? h('p', { class: 'error' }, message) : null,
    h('label', { for: 'token' }, 'Token'), input,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    token.set(input.value.trim());
    onSignedIn();
  });
  main.append(form);
  input.focus();
}
