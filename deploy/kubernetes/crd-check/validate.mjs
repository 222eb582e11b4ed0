// Validates Prometheus Operator resources (ServiceMonitor, PrometheusRule,
// PodMonitor) against the operator's CRD schemas, as packaged by
// @kubernetes-models/prometheus-operator (generated from the CRDs' OpenAPI
// v3 schemas). kubernetes-validate ships no CRD schemas, so .ci/run runs
// this beside it:
//
//   npm ci --prefix deploy/kubernetes/crd-check
//   node deploy/kubernetes/crd-check/validate.mjs deploy/kubernetes/base/*.yaml
//
// Files of other kinds are skipped; a file of a known kind that does not
// validate fails the run. The validator is first shown a broken resource of
// each kind, so a validator that accepts everything fails too.
import fs from "node:fs";
import * as yaml from "js-yaml";
import {
  PodMonitor,
  PrometheusRule,
  ServiceMonitor,
} from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const kinds = { ServiceMonitor, PrometheusRule, PodMonitor };

function check(Kind, doc) {
  new Kind(doc).validate();
}

// Self-test: these must be rejected.
const broken = [
  [ServiceMonitor, { metadata: { name: "x" }, spec: { selector: {}, endpoints: [{ port: "m", interval: 30 }] } }],
  [PrometheusRule, { metadata: { name: "x" }, spec: { groups: [{ name: "g", rules: [{ alert: "A" }] }] } }],
];
for (const [Kind, doc] of broken) {
  let rejected = false;
  try {
    check(Kind, doc);
  } catch {
    rejected = true;
  }
  if (!rejected) {
    console.error(`validator accepted a broken ${Kind.name}: it checks nothing`);
    process.exit(2);
  }
}

let failed = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(fs.readFileSync(file, "utf8"))) {
    if (!doc || doc.apiVersion !== "monitoring.coreos.com/v1") continue;
    const Kind = kinds[doc.kind];
    if (!Kind) {
      console.error(`${file}: no schema for ${doc.kind}`);
      failed++;
      continue;
    }
    try {
      check(Kind, doc);
      checked++;
      console.log(`${file}: ${doc.kind} ${doc.metadata?.name} valid`);
    } catch (e) {
      failed++;
      console.error(`${file}: ${doc.kind} ${doc.metadata?.name}: ${e.message}`);
    }
  }
}
if (checked === 0 && failed === 0) {
  console.error("no Prometheus Operator resource found");
  process.exit(2);
}
process.exit(failed ? 1 : 0);
