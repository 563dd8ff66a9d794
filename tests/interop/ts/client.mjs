// Drives Chamberlain with the official MCP TypeScript SDK, headless:
//   node client.mjs <mcp-server-url> <username> <password> [--gateway-scenario]
// With --gateway-scenario (the server is the test upstream behind the gateway) it also streams progress, answers
// an elicitation, cancels a call and tries a tool its role denies, and reports what it saw.
// The SDK's StreamableHTTPClientTransport discovers the authorization server (RFC 9728, RFC 8414), registers a public
// client (RFC 7591), and starts an authorization code + PKCE flow. redirectToAuthorization() plays the person's
// browser on the real login and consent forms, stops at the redirect to our (never contacted) loopback redirect URI,
// checks `state` and `iss` (RFC 9207), then finishAuth() exchanges the code and we reconnect, as the SDK examples do.
// Prints one JSON object on stdout; on failure prints the error on stderr and exits 1.

import { randomBytes } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';

const REQUEST_TIMEOUT_MS = 20_000;

const [serverUrl, username, password, scenarioFlag] = process.argv.slice(2);
const gatewayScenario = scenarioFlag === '--gateway-scenario';
if (!serverUrl || !username || !password) {
    console.error('usage: node client.mjs <mcp-server-url> <username> <password>');
    process.exit(2);
}
const origin = new URL(serverUrl).origin;

// ---------------------------------------------------------------------------------------------------------------
// A minimal browser: a cookie jar for one origin, and the forms' inputs read from the HTML.

class Browser {
    constructor(origin) {
        this.origin = origin;
        this.cookies = new Map();
    }

    async request(url, init = {}) {
        const target = new URL(url, this.origin);
        if (target.origin !== this.origin) throw new Error(`the browser would leave the gateway for ${target}`);
        const headers = new Headers(init.headers);
        if (this.cookies.size) headers.set('cookie', [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '));
        const response = await fetch(target, {
            ...init,
            headers,
            redirect: 'manual',
            signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS)
        });
        for (const line of response.headers.getSetCookie()) {
            const [pair, ...attributes] = line.split(';');
            const index = pair.indexOf('=');
            const name = pair.slice(0, index).trim();
            const value = pair.slice(index + 1).trim();
            const expired = attributes.some(a => /^\s*max-age\s*=\s*0\s*$/i.test(a)) || value === '';
            if (expired) this.cookies.delete(name);
            else this.cookies.set(name, value);
        }
        return response;
    }

    // Follows redirects while they stay on the gateway; returns the first page or off-site redirect.
    async follow(response) {
        for (let hops = 0; [302, 303].includes(response.status); hops++) {
            const location = new URL(response.headers.get('location'), this.origin);
            if (location.origin !== this.origin) return response;
            if (hops > 10) throw new Error('too many redirects');
            response = await this.request(location);
        }
        return response;
    }

    async submit(html, values) {
        const form = parseForm(html);
        const body = new URLSearchParams({ ...form.fields, ...values });
        return this.request(form.action, {
            method: form.method,
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
            body
        });
    }
}

function decodeEntities(text) {
    return text.replace(/&(#x[0-9a-f]+|#[0-9]+|amp|lt|gt|quot|apos);/gi, (_, entity) => {
        const named = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[entity.toLowerCase()];
        if (named) return named;
        return String.fromCodePoint(entity[1].toLowerCase() === 'x' ? parseInt(entity.slice(2), 16) : parseInt(entity.slice(1), 10));
    });
}

function attributes(tag) {
    const result = {};
    for (const [, name, , doubled, single, bare] of tag.matchAll(/([\w-]+)(\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?/g)) {
        result[name.toLowerCase()] = decodeEntities(doubled ?? single ?? bare ?? '');
    }
    return result;
}

function parseForm(html) {
    const match = html.match(/<form\b([^>]*)>([\s\S]*?)<\/form>/i);
    if (!match) throw new Error(`no form on the page: ${html.slice(0, 300)}`);
    const form = attributes(match[1]);
    const fields = {};
    for (const [, tag] of match[2].matchAll(/<input\b([^>]*)>/gi)) {
        const input = attributes(tag);
        if (input.name && input.type === 'hidden') fields[input.name] = input.value ?? '';
    }
    return { action: form.action || '', method: (form.method || 'get').toUpperCase(), fields };
}

// ---------------------------------------------------------------------------------------------------------------
// The OAuthClientProvider: everything in memory; the "browser" runs inside redirectToAuthorization().

class HeadlessProvider {
    constructor(browser) {
        this.browser = browser;
        this.redirect = `http://127.0.0.1:${40000 + (randomBytes(2).readUInt16BE() % 20000)}/callback`;
        this.savedClient = undefined;
        this.savedTokens = undefined;
        this.verifier = undefined;
        this.discovery = undefined;
        this.lastState = undefined;
        this.authorizationUrl = undefined;
        this.callback = undefined; // { code, state, iss }
        this.registrations = 0;
        this.steps = []; // which pages the browser went through
    }

    get redirectUrl() {
        return this.redirect;
    }

    get clientMetadata() {
        return {
            client_name: 'Chamberlain interop (TypeScript SDK)',
            redirect_uris: [this.redirect],
            grant_types: ['authorization_code', 'refresh_token'],
            response_types: ['code'],
            token_endpoint_auth_method: 'none'
        };
    }

    state() {
        this.lastState = randomBytes(16).toString('base64url');
        return this.lastState;
    }

    clientInformation() {
        return this.savedClient;
    }

    saveClientInformation(information) {
        if (!this.savedClient || this.savedClient.client_id !== information.client_id) this.registrations++;
        this.savedClient = information;
    }

    tokens() {
        return this.savedTokens;
    }

    saveTokens(tokens) {
        this.savedTokens = tokens;
    }

    saveCodeVerifier(verifier) {
        this.verifier = verifier;
    }

    codeVerifier() {
        if (!this.verifier) throw new Error('no code verifier saved');
        return this.verifier;
    }

    saveDiscoveryState(state) {
        this.discovery = state;
    }

    async redirectToAuthorization(authorizationUrl) {
        this.authorizationUrl = new URL(authorizationUrl);
        const browser = this.browser;
        let page = await browser.follow(await browser.request(authorizationUrl));
        let html = page.status === 200 ? await page.text() : '';
        if (html.includes('action="/login"') && html.includes('name="password"')) {
            this.steps.push('login');
            const signedIn = await browser.submit(html, { username, password });
            if (signedIn.status !== 303) throw new Error(`sign-in failed: ${signedIn.status} ${(await signedIn.text()).slice(0, 300)}`);
            page = await browser.follow(signedIn);
            html = page.status === 200 ? await page.text() : '';
        }
        if (html.includes('name="decision"')) {
            this.steps.push('consent');
            page = await browser.follow(await browser.submit(html, { decision: 'allow' }));
        }
        if (page.status !== 302) {
            throw new Error(`expected a redirect to the client, got ${page.status}: ${(html || (await page.text())).slice(0, 300)}`);
        }
        const location = new URL(page.headers.get('location'));
        if (`${location.origin}${location.pathname}` !== this.redirect) throw new Error(`redirected to ${location}, not ${this.redirect}`);
        const params = Object.fromEntries(location.searchParams);
        if (params.error) throw new Error(`authorization error: ${params.error} ${params.error_description ?? ''}`);
        // RFC 6749 section 10.12: the state must come back unchanged.
        if (params.state !== this.lastState) throw new Error(`state mismatch: sent ${this.lastState}, got ${params.state}`);
        // RFC 9207 section 2.4: iss must equal the issuer of the authorization server the request went to.
        const issuer = this.discovery?.authorizationServerMetadata?.issuer;
        if (!issuer || params.iss !== issuer) throw new Error(`iss mismatch: expected ${issuer}, got ${params.iss}`);
        if (!params.code) throw new Error('no authorization code in the redirect');
        this.callback = params;
    }
}

// ---------------------------------------------------------------------------------------------------------------

async function connect(provider) {
    const client = new Client({ name: 'chamberlain-interop', version: '1.0.0' }, { capabilities: { elicitation: {} } });
    client.setRequestHandler(ElicitRequestSchema, async () => ({ action: 'accept', content: { name: 'Ada' } }));
    const transport = new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider });
    await client.connect(transport);
    return { client, transport };
}

async function main() {
    const provider = new HeadlessProvider(new Browser(origin));
    let first = true;
    let connection;
    try {
        connection = await connect(provider);
        first = false;
    } catch (error) {
        if (!(error instanceof UnauthorizedError) || !provider.callback) throw error;
    }
    if (first) {
        // Same shape as the SDK's simpleOAuthClient example: exchange the code on the transport, then reconnect.
        const transport = new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider });
        await transport.finishAuth(provider.callback.code);
        connection = await connect(provider);
    }
    const { client } = connection;
    const tools = await client.listTools();
    const sum = await client.callTool({ name: 'add', arguments: { a: 2, b: 3 } });
    const authorization = provider.authorizationUrl;
    const output = {
        issuer: provider.discovery?.authorizationServerMetadata?.issuer ?? null,
        authorization_server: provider.discovery?.authorizationServerUrl ?? null,
        resource_metadata: provider.discovery?.resourceMetadata ?? null,
        client_id: provider.savedClient?.client_id ?? null,
        token_endpoint_auth_method: provider.savedClient?.token_endpoint_auth_method ?? null,
        registrations: provider.registrations,
        authorization_request: authorization
            ? {
                  endpoint: `${authorization.origin}${authorization.pathname}`,
                  params: Object.fromEntries(authorization.searchParams)
              }
            : null,
        redirect: provider.callback ? { state: provider.callback.state, iss: provider.callback.iss } : null,
        state_sent: provider.lastState ?? null,
        browser_steps: provider.steps,
        token_type: provider.savedTokens?.token_type ?? null,
        has_refresh_token: Boolean(provider.savedTokens?.refresh_token),
        server_version: client.getServerVersion() ?? null,
        tools: tools.tools.map(tool => tool.name),
        add: sum
    };
    if (gatewayScenario) output.scenario = await throughTheGateway(client);
    await client.close();
    process.stdout.write(`${JSON.stringify(output)}\n`);
}

const textOf = result => result.content.filter(item => item.type === 'text').map(item => item.text).join('');

async function throughTheGateway(client) {
    const progress = [];
    const counted = await client.callTool({ name: 'count', arguments: { n: 3, delay: 0.05 } }, undefined, {
        onprogress: update => progress.push(update.progress),
        timeout: REQUEST_TIMEOUT_MS
    });
    const asked = await client.callTool({ name: 'ask_name', arguments: {} });
    const cancelledBefore = Number(textOf(await client.callTool({ name: 'cancelled', arguments: {} })));
    const abort = new AbortController();
    setTimeout(() => abort.abort('the user gave up'), 500);
    let cancelError = null;
    try {
        await client.callTool({ name: 'sleep', arguments: { seconds: 30 } }, undefined, { signal: abort.signal });
    } catch (error) {
        cancelError = String(error?.message ?? error);
    }
    // The SDK sent notifications/cancelled; wait until the upstream says its sleep was cancelled.
    let cancelledAfter = cancelledBefore;
    for (let attempt = 0; attempt < 100 && cancelledAfter === cancelledBefore; attempt++) {
        await new Promise(resolve => setTimeout(resolve, 50));
        cancelledAfter = Number(textOf(await client.callTool({ name: 'cancelled', arguments: {} })));
    }
    let denied = null;
    try {
        await client.callTool({ name: 'delete_everything', arguments: {} });
    } catch (error) {
        denied = String(error?.message ?? error);
    }
    return {
        count: textOf(counted),
        progress,
        ask_name: textOf(asked),
        cancel_error: cancelError,
        upstream_saw_cancellation: cancelledAfter > cancelledBefore,
        denied
    };
}

main().catch(error => {
    console.error(error?.stack ?? String(error));
    process.exit(1);
});
