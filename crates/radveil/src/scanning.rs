//! `radveil scan`: the residual risk of a de-identified set, whoever made it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{Context, Result};
use radveil_pipeline::input::{self, Input, Scratch};
use radveil_scan::{quasi, Finding, Kind};

/// Reads every DICOM file under the inputs and reports what identifying content is left,
/// per file and in total (never the values: tag paths and kinds). Exit status 0 when
/// nothing is found, 1 otherwise.
#[derive(clap::Args)]
pub struct ScanArgs {
    /// Files or directories (walked; links to directories are not followed).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Write the report (JSON: per file, findings by tag path and kind) to this new file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Also compute the k-anonymity of the quasi-identifiers across patients (age, sex,
    /// size, weight, ethnic group, study month, institution, equipment).
    #[arg(long)]
    quasi: bool,
    /// With --quasi, count a smallest class of fewer than K patients as a finding.
    #[arg(long, value_name = "K", default_value_t = 0)]
    min_k: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
}

#[derive(serde::Serialize)]
struct FileReport {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    findings: Vec<Finding>,
}

#[derive(serde::Serialize)]
struct Report {
    files: usize,
    files_with_findings: usize,
    unreadable: usize,
    totals: std::collections::BTreeMap<&'static str, usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    k_anonymity: Option<quasi::KAnonymity>,
    per_file: Vec<FileReport>,
}

pub fn scan(args: ScanArgs) -> Result<ExitCode> {
    let (files, refused) = crate::inputs::collect(&args.inputs);
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, files.len().max(1));
    let budget = radveil_part10::MemoryBudget::new(radveil_pipeline::memory::default_limit());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, FileReport, quasi::Record)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                let mut scratch = Scratch::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    let (report, record) = one(path, &mut scratch, &budget);
                    scratch.release();
                    if let Ok(mut r) = results.lock() {
                        r.push((i, report, record));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _, _)| *i);
    let mut totals = std::collections::BTreeMap::new();
    for k in Kind::ALL {
        totals.insert(k.name(), 0usize);
    }
    let mut per_file = Vec::with_capacity(results.len() + refused.len());
    let mut records = Vec::with_capacity(results.len());
    let (mut with_findings, mut unreadable) = (0, refused.len());
    for (_, r, rec) in results {
        if r.error.is_some() {
            unreadable += 1;
        }
        if !r.findings.is_empty() {
            with_findings += 1;
        }
        for f in &r.findings {
            *totals.entry(f.kind.name()).or_default() += 1;
        }
        records.push(rec);
        per_file.push(r);
    }
    for (path, reason) in refused {
        per_file.push(FileReport {
            file: path.display().to_string(),
            error: Some(reason),
            findings: Vec::new(),
        });
    }
    let k = args.quasi.then(|| quasi::k_anonymity(&records));
    let report = Report {
        files: per_file.len(),
        files_with_findings: with_findings,
        unreadable,
        totals,
        k_anonymity: k,
        per_file,
    };
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&report)?;
        radveil_pipeline::write_new_file(path, &json)
            .with_context(|| format!("writing the report {}", path.display()))?;
    }
    outln!(
        "{} files scanned, {} with findings, {} not readable as DICOM",
        report.files,
        report.files_with_findings,
        report.unreadable
    );
    for (kind, n) in report.totals.iter().filter(|(_, n)| **n > 0) {
        outln!("  {kind}: {n} element(s)");
    }
    let mut found = report.files_with_findings > 0;
    if let Some(k) = &report.k_anonymity {
        let class: Vec<String> = k
            .smallest_class
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        outln!(
            "k-anonymity: k = {} over {} patients ({} classes; quasi-identifiers: {}); smallest class: {}",
            k.k,
            k.patients,
            k.classes,
            if k.quasi_identifiers.is_empty() { "none".to_string() } else { k.quasi_identifiers.join(", ") },
            if class.is_empty() { "-".to_string() } else { class.join(", ") }
        );
        found |= k.patients > 0 && k.k < args.min_k;
    }
    Ok(if found {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Scans one file: read (up to a trailing Pixel Data element) under the memory budget.
fn one(
    path: &std::path::Path,
    scratch: &mut Scratch,
    budget: &radveil_part10::MemoryBudget,
) -> (FileReport, quasi::Record) {
    let file = path.display().to_string();
    let failed = |e: String| {
        (
            FileReport {
                file: file.clone(),
                error: Some(e),
                findings: Vec::new(),
            },
            quasi::Record::default(),
        )
    };
    let opened = match Input::open(path) {
        Ok(i) => i,
        Err(e) => return failed(e.to_string()),
    };
    let mut loaded = match input::load(opened, scratch, budget, 0) {
        Ok(l) => l,
        Err(e) => return failed(e.to_string()),
    };
    match radveil_scan::scan_in(loaded.bytes, &mut loaded.grant) {
        Ok(s) => (
            FileReport {
                file: file.clone(),
                error: None,
                findings: s.findings,
            },
            s.quasi,
        ),
        Err(e) => failed(e.to_string()),
    }
}
