// Runs 50-dbtune-agent.rules in a stand-in for polkit's JavaScript API and checks its decisions.
// Usage: node test-rules.js 50-dbtune-agent.rules
"use strict";
const fs = require("fs");
const vm = require("vm");

const file = process.argv[2];
const rules = [];
const polkit = {
    Result: { YES: "yes", NO: "no", NOT_HANDLED: null },
    addRule: (f) => rules.push(f),
};
vm.runInNewContext(fs.readFileSync(file, "utf8"), { polkit }, { filename: file });
if (rules.length !== 1) throw new Error(`expected one rule, got ${rules.length}`);

function decide(id, user, details) {
    const action = { id, lookup: (k) => details[k] };
    const r = rules[0](action, { user });
    return r === undefined ? null : r;
}
const M = "org.freedesktop.systemd1.manage-units";
const cases = [
    [M, "dbtune", { unit: "postgresql.service", verb: "restart" }, "yes"],
    [M, "dbtune", { unit: "postgresql.service", verb: "stop" }, null],
    [M, "dbtune", { unit: "postgresql.service", verb: "start" }, null],
    [M, "dbtune", { unit: "sshd.service", verb: "restart" }, null],
    [M, "dbtune", { unit: "dbtune-agent.service", verb: "restart" }, null],
    [M, "postgres", { unit: "postgresql.service", verb: "restart" }, null],
    ["org.freedesktop.systemd1.manage-unit-files", "dbtune", { unit: "postgresql.service", verb: "restart" }, null],
    ["org.freedesktop.login1.reboot", "dbtune", {}, null],
];
let failed = 0;
for (const [id, user, details, want] of cases) {
    const got = decide(id, user, details);
    const ok = got === want;
    if (!ok) failed++;
    console.log(`${ok ? "ok  " : "FAIL"} ${user} ${id} ${JSON.stringify(details)} -> ${got} (want ${want})`);
}
console.log(`${cases.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
