// Drives npm's dicomweb-client (the library OHIF uses) from node for
// tests/integration/test_dicomweb.py: node client.js <root url> <op> <json args>.
// Prints one JSON line: {"result": ...} or {"error": ..., "status": ...}.
// Node has no XMLHttpRequest: xhr2 gives one.
'use strict';
global.XMLHttpRequest = require('xhr2');
const fs = require('fs');
const crypto = require('crypto');
const { api } = require('dicomweb-client');

const sha = (buf) => crypto.createHash('sha256').update(Buffer.from(buf)).digest('hex');

async function main() {
  const [url, op, argText] = process.argv.slice(2);
  const args = JSON.parse(argText || '{}');
  const client = new api.DICOMwebClient({ url, singlepart: false });
  switch (op) {
    case 'store': {
      const datasets = args.files.map((f) => {
        const b = fs.readFileSync(f);
        return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
      });
      const opts = { datasets };
      if (args.studyInstanceUID) opts.studyInstanceUID = args.studyInstanceUID;
      const rsp = await client.storeInstances(opts);
      return typeof rsp === 'string' ? JSON.parse(rsp) : rsp;
    }
    case 'searchForStudies':
    case 'searchForSeries':
    case 'searchForInstances':
    case 'retrieveStudyMetadata':
    case 'retrieveSeriesMetadata':
    case 'retrieveInstanceMetadata':
      return client[op](args);
    case 'retrieveInstance': {
      // args.out: also write the bytes there (to check a transcoded answer)
      const buf = await client.retrieveInstance(args);
      if (args.out) fs.writeFileSync(args.out, Buffer.from(buf));
      return sha(buf);
    }
    case 'retrieveSeries':
      return (await client.retrieveSeries(args)).map(sha).sort();
    case 'retrieveInstanceFrames': {
      const frames = await client.retrieveInstanceFrames(args);
      if (args.out) fs.writeFileSync(args.out, Buffer.from(frames[0]));
      return frames.map(sha);
    }
    case 'retrieveBulkData':
      return (await client.retrieveBulkData(args)).map(sha);
    default:
      throw new Error(`unknown op ${op}`);
  }
}

main().then(
  (result) => console.log(JSON.stringify({ result })),
  (e) => console.log(JSON.stringify({ error: String(e && e.message || e), status: e && e.status })),
);
