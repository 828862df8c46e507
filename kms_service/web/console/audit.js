// Audit: the sinks, their last failure, the chains' anchors, and the database sink verified on request.
import { allows, capabilities, get } from "./api.js";
import { button, dl, errorText, h, hiddenBecause, notice, section, table, when } from "./ui.js";

export async function renderAudit(main) {
  main.append(h("h1", {}, "Audit"));
  const caps = await capabilities(["sys/audit-status"]);
  if (!allows(caps["sys/audit-status"], "sudo")) { main.append(hiddenBecause("sys/audit-status", "sudo")); return; }
  const state = (await get("sys/audit-status")).data;
  main.append(section("Sinks", state.enabled ? table("Sinks", [
    { title: "Device", value: (s) => s.path },
    { title: "Where", value: (s) => s.options.file_path || `table ${s.options.table}` },
  ], state.sinks) : notice("info", "No audit log: the server was started without --audit-file or --audit-db."),
  state.last_error ? notice("error", `Last failure: ${state.last_error}`) : notice("ok", "No sink failure.")));
  main.append(section("Anchors", table("Chain heads recorded in the database", [
    { title: "Chain", value: (a) => a.chain_id },
    { title: "Sink", value: (a) => a.sink },
    { title: "Last record", value: (a) => String(a.seq) },
    { title: "Closed", value: (a) => (a.closed ? "yes" : "no") },
    { title: "Anchored", value: (a) => when(a.updated_at) },
  ], state.anchors, { empty: "No chain anchored yet." })));
  const result = h("div", { "aria-live": "polite" });
  const verify = section("Verify the database sink", h("p", {}, "Reads every record of audit_records and checks each chain against its anchor."),
    button("Verify", async () => {
      result.replaceChildren(notice("info", "Verifying…"));
      try {
        const v = (await get("sys/audit-status", { query: { verify: "true" } })).data.verification;
        result.replaceChildren(
          notice(v.ok ? "ok" : "error", v.ok ? "Intact: every chain verified." : "Problems found."),
          dl([["Unreadable lines", String(v.unreadable_lines)], ["Anchored without records", v.anchored_without_records.join(", ") || "none"]]),
          table("Chains", [
            { title: "Chain", value: (c) => c.id },
            { title: "Result", value: (c) => (c.ok ? "intact" : `broken: ${c.problem}`) },
            { title: "Records", value: (c) => String(c.records) },
            { title: "Verified to", value: (c) => String(c.verified_seq) },
            { title: "Tail", value: (c) => c.tail },
          ], v.chains, { empty: "No record in the database sink." }));
      } catch (e) {
        result.replaceChildren(notice("error", errorText(e)));
      }
    }), result);
  if (state.sinks.some((s) => s.type === "db")) main.append(verify);
}
