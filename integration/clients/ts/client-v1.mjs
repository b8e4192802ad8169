// One MCP session through the gateway with the TypeScript SDK v1 (`@modelcontextprotocol/sdk`),
// which knows only the legacy era: the initialize handshake and an Mcp-Session-Id session.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { gatewayHeaders, heldSession, main, packageVersion, parseArgs, recordingFetch, toolText } from './common.mjs';

const SCRIPT = 'client-v1.mjs';
const args = parseArgs(SCRIPT, ['legacy']);

await main(SCRIPT, args.mode, async () => {
  const { wire, fetchLike } = recordingFetch();
  const transport = new StreamableHTTPClientTransport(new URL(args.url), {
    requestInit: { headers: gatewayHeaders(args) },
    fetch: fetchLike,
  });
  const client = new Client({ name: 'gateway-test-ts-v1', version: '1.0.0' });
  await client.connect(transport);
  const tools = await client.listTools();
  const echo = toolText(await client.callTool({ name: 'echo', arguments: { text: args.text } }));
  const whoami = JSON.parse(toolText(await client.callTool({ name: 'whoami', arguments: {} })));
  const out = {
    sdk: '@modelcontextprotocol/sdk',
    sdk_version: packageVersion('@modelcontextprotocol/sdk'),
    mode: args.mode,
    era: 'legacy',
    protocol_version: transport.protocolVersion,
    tools: tools.tools.map((t) => t.name).sort(),
    echo,
    whoami,
    session_id: heldSession(wire),
  };
  await transport.terminateSession();
  await client.close();
  return { ...out, exchanges: wire.exchanges };
});
