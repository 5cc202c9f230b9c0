// The console's shell: who is signed in (GET /v1/access), the navigation, and a hash router
// that renders one page module at a time (each returns a cleanup function, e.g. to close
// its event stream).

import { api, ApiError, token } from './api.js';
import { clear, h } from './dom.js';
import * as overview from './pages/overview.js';
import * as tasks from './pages/tasks.js';
import * as task from './pages/task.js';
import * as types from './pages/types.js';
import * as schedules from './pages/schedules.js';
import * as audit from './pages/audit.js';
import * as dataset from './pages/dataset.js';
import * as simulate from './pages/simulate.js';
import * as signin from './pages/signin.js';

const PAGES = [
  ['overview', 'Overview', overview],
  ['tasks', 'Tasks', tasks],
  ['types', 'Task types', types],
  ['schedules', 'Schedules', schedules],
  ['audit', 'Audit', audit],
  ['dataset', 'Dataset', dataset],
  ['simulate', 'Simulate', simulate],
];
const ADMIN_PAGES = new Set(['simulate']);
const BY_NAME = { ...Object.fromEntries(PAGES.map(([name, , module]) => [name, module])), task };

const session = { access: null, taskTypes: [] };
let cleanup = null;

function route() {
  const [path, search = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const [name = 'overview', ...rest] = path.split('/');
  return {
    name: name || 'overview',
    param: rest.map(decodeURIComponent).join('/') || null,
    search: new URLSearchParams(search),
  };
}

async function loadSession() {
  const access = await api('/v1/access');
  if (!access.signed_in) throw new ApiError(401, 'unauthenticated', null);
  session.taskTypes = (await api('/v1/task-types')).task_types;
  session.access = access;
}

function renderHeader(current) {
  const nav = clear(document.getElementById('nav'));
  for (const [name, title] of PAGES) {
    if (ADMIN_PAGES.has(name) && session.access?.role !== 'admin') continue;
    const active = current === name || (current === 'task' && name === 'tasks');
    nav.append(h('a', { href: `#/${name}`, class: active ? 'active' : '' }, title));
  }
  const who = clear(document.getElementById('who'));
  const access = session.access;
  if (!access) return;
  who.append(h('span', { class: 'principal' }, `${access.principal} · ${access.role}`));
  if (access.principals_configured) {
    who.append(h('button', { class: 'link', id: 'sign-out', onclick: signOut }, 'Sign out'));
  }
}

function signOut() {
  token.clear();
  session.access = null;
  show();
}

async function show() {
  if (cleanup) cleanup();
  cleanup = null;
  const main = document.getElementById('main');
  const { name, param, search } = route();
  try {
    if (!session.access) await loadSession();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      renderHeader(null);
      clear(main);
      signin.render(main, { message: error.message, onSignedIn: show });
      return;
    }
    clear(main).append(h('p', { class: 'error' }, `The API did not answer: ${error.message}`));
    return;
  }
  renderHeader(name);
  const page = BY_NAME[name] || overview;
  clear(main);
  try {
    cleanup = (await page.render(main, param, session, search)) || null;
  } catch (error) {
    main.append(h('p', { class: 'error' }, `Could not show this page: ${error.message}`));
  }
}

window.addEventListener('hashchange', show);
show();
