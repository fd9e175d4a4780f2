// A DICOM peer that is not dcmtk (npm's dcmjs-dimse, an independent DIMSE
// implementation), for tests/integration/test_dimse_peer.py. One association
// per run; prints one JSON object: the status of every response received.
//
//   node peer.js PORT CALLED_AET echo
//   node peer.js PORT CALLED_AET store FILE...
//   node peer.js PORT CALLED_AET find-studies KEY=VALUE...
//   node peer.js PORT CALLED_AET move-study DESTINATION STUDY_UID
//   node peer.js PORT CALLED_AET get-study STUDY_UID
'use strict';
const dimse = require('dcmjs-dimse');
const { Client } = dimse;
const { CEchoRequest, CStoreRequest, CFindRequest, CMoveRequest, CGetRequest } = dimse.requests;
const { CStoreResponse } = dimse.responses;
const { Status } = dimse.constants;

const [port, called, op, ...args] = process.argv.slice(2);
const out = { op, responses: [], received: [] };
const client = new Client();

function record(request) {
  request.on('response', (response) => {
    const r = { status: response.getStatus() };
    const ds = response.getDataset();
    if (ds) r.dataset = ds.getElements();
    out.responses.push(r);
  });
  client.addRequest(request);
}

switch (op) {
  case 'echo':
    record(new CEchoRequest());
    break;
  case 'store':
    for (const f of args) record(new CStoreRequest(f));
    break;
  case 'find-studies': {
    const keys = {};
    for (const kv of args) {
      const i = kv.indexOf('=');
      keys[kv.slice(0, i)] = kv.slice(i + 1);
    }
    record(CFindRequest.createStudyFindRequest(keys));
    break;
  }
  case 'move-study':
    record(CMoveRequest.createStudyMoveRequest(args[0], args[1]));
    break;
  case 'get-study':
    client.on('cStoreRequest', (request, callback) => {
      out.received.push(request.getAffectedSopInstanceUid());
      const response = CStoreResponse.fromRequest(request);
      response.setStatus(Status.Success);
      callback(response);
    });
    record(CGetRequest.createStudyGetRequest(args[0]));
    break;
  default:
    console.error(`unknown operation ${op}`);
    process.exit(2);
}
client.on('networkError', (e) => {
  out.networkError = String(e);
});
client.on('associationRejected', (r) => {
  out.rejected = r;
});
client.on('closed', () => {
  console.log(JSON.stringify(out));
});
client.send('127.0.0.1', Number(port), 'DCMJSDIMSE', called, { associationTimeout: 10000, pduTimeout: 10000 });
