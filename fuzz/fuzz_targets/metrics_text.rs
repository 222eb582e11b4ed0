#![no_main]

// The per-agent /metrics families parse with an independent Prometheus text
// parser, and each agent label reads back as one of the agents' ids.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((text, ids)) = agent_supervisor::fuzzing::metrics_text(data) else {
        return;
    };
    let parsed = openmetrics_parser::prometheus::parse_prometheus(&text)
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    for sample in parsed.families["agent_supervisor_agent_up"].iter_samples() {
        let labels = sample.get_labelset().expect("labels");
        let agent = labels.get_label_value("agent").expect("an agent label");
        assert!(ids.iter().any(|i| i == agent), "{agent:?}");
    }
});
