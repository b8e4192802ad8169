// One MCP session through the gateway with the TypeScript SDK v2 (`@modelcontextprotocol/client`).
// MODE is the SDK's version negotiation: `modern` (pinned to 2026-07-28), `legacy` (the
// initialize handshake) or `auto` (probes `server/discover`, falls back to initialize).
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { gatewayHeaders, heldSession, main, packageVersion, parseArgs, recordingFetch, toolText } from './common.mjs';

const SCRIPT = 'client-v2.mjs';
const NEGOTIATION = { modern: { pin: '2026-07-28' }, legacy: 'legacy', auto: 'auto' };
const args = parseArgs(SCRIPT, Object.keys(NEGOTIATION));

await main(SCRIPT, args.mode, async () => {
  const { wire, fetchLike } = recordingFetch();
  const transport = new StreamableHTTPClientTransport(new URL(args.url), {
    requestInit: { headers: gatewayHeaders(args) },
    fetch: fetchLike,
  });
  const client = new Client(
    { name: 'gateway-test-ts-v2', version: '1.0.0' },
    { versionNegotiation: { mode: NEGOTIATION[args.mode] } },
  );
  await client.connect(transport);
  const tools = await client.listTools();
  const echo = toolText(await client.callTool({ name: 'echo', arguments: { text: args.text } }));
  const whoami = JSON.parse(toolText(await client.callTool({ name: 'whoami', arguments: {} })));
  const out = {
    sdk: '@modelcontextprotocol/client',
    sdk_version: packageVersion('@modelcontextprotocol/client'),
    mode: args.mode,
    era: client.getProtocolEra(),
    protocol_version: client.getNegotiatedProtocolVersion(),
    tools: tools.tools.map((t) => t.name).sort(),
    echo,
    whoami,
    session_id: heldSession(wire),
  };
  // Ends a legacy session with a DELETE (a no-op without one), then closes the transport.
  if (transport.sessionId) await transport.terminateSession();
  await client.close();
  return { ...out, exchanges: wire.exchanges };
});
