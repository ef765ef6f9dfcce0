//! `mood sweep` end to end: every generation kept and, re-scored in a plain llama.cpp
//! context, giving the table; kill and resume giving the uninterrupted table; print figures
//! of the documented size and resolution, each point labelled with its weight and the axes
//! with their unit; bad input refused before any work is lost.

mod common;

use common::*;
use mood::apps::plot;
use mood::apps::sweep::stats::Row;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A fresh scratch folder with a prompt file of `prompts` (ids "p0", "p1", …).
fn setup(name: &str, prompts: &[&str]) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("mood-sweep-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("prompts.jsonl");
    let lines: String = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{{\"id\": \"p{i}\", \"prompt\": \"{p}\"}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    (input, dir.join("out"))
}

/// `mood sweep` of the demo recipe (or `recipe`) from `input` into `out`, with `extra`.
fn sweep_command(recipe: &Path, input: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mood"));
    c.arg("sweep").arg("-r").arg(recipe).arg("-i").arg(input).arg("-o").arg(out);
    c.args(["--threads", "2"]).args(extra);
    // One strategy for every process, as in the other tests: the tables of different runs are
    // compared number for number, and strategies round differently.
    if !extra.contains(&"--strategy") {
        c.args(["--strategy", "threads"]);
    }
    c
}

fn sweep(input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    sweep_command(&demo_recipe(), input, out, extra).output().unwrap()
}

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn read_jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The CSV as a header and rows of cells.
fn read_csv(p: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(p).unwrap();
    let mut lines = text.lines().map(|l| l.split(',').map(String::from).collect::<Vec<_>>());
    (lines.next().unwrap(), lines.collect())
}

fn num(cell: &str) -> f64 {
    cell.parse().unwrap_or_else(|_| panic!("not a number: {cell:?}"))
}

/// Mean and sample standard error, written out directly.
fn mean_and_se(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

#[test]
fn generations_rescored_independently_give_the_table() {
    let prompts = ["The ocean", "The moon", "A river"];
    let (input, out) = setup("rescore", &prompts);
    let o =
        sweep(&input, &out, &["--grid", "0:1:0.5", "-n", "8", "--parallel", "3", "--beta", "0.5"]);
    ok(&o);
    let records = read_jsonl(&out.join("generations.jsonl"));
    assert_eq!(records.len(), 9, "3 weight vectors × 3 prompts");
    let mut keys: Vec<String> =
        records.iter().map(|r| format!("{}|{}", r["weights"], r["id"])).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 9, "each generation once");

    // Each policy's log-likelihood of each output, from a plain llama.cpp context.
    let model = load_model(&default_model());
    let mut plain = PlainScorer::new(&model);
    let beta = 0.5;
    // Per poet's weight: (poet's reward, scientist's reward, tokens) of each generation.
    type Scored = (f64, f64, usize);
    let mut rewards: Vec<(f64, Vec<Scored>)> = Vec::new();
    for r in &records {
        let i: usize = r["id"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(r["prompt"], prompts[i]);
        let tokens = tokens_of(r);
        assert_eq!(r["completion_tokens"], tokens.len());
        let mut ll =
            |prefix: &str| plain.log_likelihood(&format!("{prefix}{}", prompts[i]), &tokens);
        let (reference, poet, scientist) = (ll(""), ll(POET), ll(SCIENTIST));
        let close = |a: f64, b: f64| (a - b).abs() < 1e-3 * b.abs().max(1.0);
        let stored = &r["log_likelihood"];
        assert!(close(stored["reference"].as_f64().unwrap(), reference), "{stored} vs {reference}");
        assert!(close(stored["poet"].as_f64().unwrap(), poet), "{stored} vs {poet}");
        assert!(close(stored["scientist"].as_f64().unwrap(), scientist), "{stored} vs {scientist}");
        let (rp, rs) = (beta * (poet - reference), beta * (scientist - reference));
        assert!(close(r["rewards"]["poet"].as_f64().unwrap(), rp), "{}", r["rewards"]);
        let w = r["weights"][0].as_f64().unwrap();
        match rewards.iter_mut().find(|(x, _)| *x == w) {
            Some((_, v)) => v.push((rp, rs, tokens.len())),
            None => rewards.push((w, vec![(rp, rs, tokens.len())])),
        }
    }

    // The table from those independent scores: means, standard errors, lengths, Pareto set.
    let (header, rows) = read_csv(&out.join("sweep.csv"));
    assert_eq!(
        header.join(","),
        "w_poet,w_scientist,reward_poet,se_poet,reward_scientist,se_scientist,mean_tokens,generations,errors,pareto"
    );
    assert_eq!(rows.len(), 3);
    let mut means = Vec::new();
    for row in &rows {
        let w = num(&row[0]);
        assert_eq!(w + num(&row[1]), 1.0);
        let got = &rewards.iter().find(|(x, _)| *x == w).unwrap().1;
        let (mp, sp) = mean_and_se(&got.iter().map(|g| g.0).collect::<Vec<_>>());
        let (ms, ss) = mean_and_se(&got.iter().map(|g| g.1).collect::<Vec<_>>());
        let tokens = got.iter().map(|g| g.2 as f64).sum::<f64>() / got.len() as f64;
        let close = |a: f64, b: f64| (a - b).abs() < 2e-3 * b.abs().max(1.0);
        assert!(close(num(&row[2]), mp) && close(num(&row[3]), sp), "{w}: {row:?} vs {mp} ± {sp}");
        assert!(close(num(&row[4]), ms) && close(num(&row[5]), ss), "{w}: {row:?} vs {ms} ± {ss}");
        assert_eq!(num(&row[6]), tokens);
        assert_eq!((row[7].as_str(), row[8].as_str()), ("3", "0"));
        means.push((num(&row[2]), num(&row[4]), row[9] == "true"));
    }
    for (i, m) in means.iter().enumerate() {
        let dominated = means
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && o.0 >= m.0 && o.1 >= m.1 && (o.0 > m.0 || o.1 > m.1));
        assert_eq!(m.2, !dominated, "row {i}: {means:?}");
    }
    // MOD steers: the poet's mean reward grows with the poet's weight.
    assert!(means[2].0 > means[0].0, "{means:?}");

    // sweep.jsonl holds the same rows.
    let jsonl = read_jsonl(&out.join("sweep.jsonl"));
    assert_eq!(jsonl.len(), 3);
    for (j, row) in jsonl.iter().zip(&rows) {
        assert_eq!(j["rewards"][0].as_f64().unwrap(), num(&row[2]));
        assert_eq!(j["rewards_se"][1].as_f64().unwrap(), num(&row[5]));
        assert_eq!(j["pareto"].as_bool().unwrap(), row[9] == "true");
    }
    check_figure(&out, 2, &rows.iter().map(|r| r[9] == "true").collect::<Vec<_>>());
}

/// A PNG read back: size, pixels per metre (x, y) when given in metres, RGB pixels.
struct Png {
    size: (u32, u32),
    per_metre: Option<(u32, u32)>,
    rgb: Vec<u8>,
}

fn read_png(p: &Path) -> Png {
    let file = std::io::BufReader::new(std::fs::File::open(p).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let info = reader.info();
    let size = (info.width, info.height);
    let dims = info.pixel_dims.filter(|d| d.unit == png::Unit::Meter).map(|d| (d.xppu, d.yppu));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut buf).unwrap();
    Png { size, per_metre: dims, rgb: buf }
}

/// The figure's files are what docs/sweeps.md documents: a 300-dpi PNG of 5.5 × 3.75 in (two
/// experts) or 4.25 × 3.4 in per panel, three to a row, plus 1.25 in and 0.35 in (more); an
/// SVG of the same size in inches whose text is outlines; Pareto points filled, dominated
/// points rings.
fn check_figure(out: &Path, experts: usize, pareto: &[bool]) {
    let pairs = experts * (experts - 1) / 2;
    let (cols, rows) = (pairs.min(3), pairs.div_ceil(3));
    let inches = (cols as f64 * 4.25 + 1.25, rows as f64 * 3.4 + 0.35);
    let pixels = ((inches.0 * 300.0).round() as u32, (inches.1 * 300.0).round() as u32);
    if experts == 2 {
        assert_eq!(pixels, (1650, 1125));
    }

    let Png { size, per_metre: dims, rgb } = read_png(&out.join("pareto.png"));
    assert_eq!(size, pixels);
    assert_eq!(dims, Some((11811, 11811)), "300 dpi is 11811 pixels per metre");
    // Ink on white: the text and axes, and the colour scale's dark end (viridis(0), the
    // colour bar's bottom, #440154).
    let px: Vec<&[u8]> = rgb.chunks_exact(3).collect();
    let white = px.iter().filter(|p| p.iter().all(|&c| c == 255)).count();
    let dark = px.iter().filter(|p| p.iter().all(|&c| c < 60)).count();
    let viridis0 =
        px.iter().filter(|p| p[0].abs_diff(68) < 4 && p[1] < 8 && p[2].abs_diff(84) < 4).count();
    assert!(white > px.len() / 2 && dark > 2000 && viridis0 > 200, "{white} {dark} {viridis0}");

    let svg = std::fs::read_to_string(out.join("pareto.svg")).unwrap();
    let head = format!(
        "width=\"{}in\" height=\"{}in\" viewBox=\"0 0 {} {}\"",
        inches.0, inches.1, pixels.0, pixels.1
    );
    assert!(svg.starts_with("<svg") && svg.contains(&head), "{}", &svg[..300]);
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(!svg.contains("<text") && !svg.contains("font-family"), "text is drawn as outlines");
    // Every glyph used is defined.
    for used in svg.split("xlink:href=\"#").skip(1) {
        let id = &used[..used.find('"').unwrap()];
        assert!(svg.contains(&format!("<path id=\"{id}\" d=\"M")), "glyph {id}");
    }
    // Markers: a Pareto point is a filled disc and its outline, a dominated point a ring; the
    // legend shows one of each.
    let circles: Vec<&str> = svg.lines().filter(|l| l.starts_with("<circle")).collect();
    let filled = circles.iter().filter(|l| !l.contains("fill=\"none\"")).count();
    let on = pareto.iter().filter(|&&p| p).count();
    assert_eq!(filled, pairs * on + 1, "{circles:?}");
    assert_eq!(circles.len(), pairs * (2 * on + (pareto.len() - on)) + 3, "{circles:?}");
}

/// What a figure draws, recorded by a plotters backend: every text with its position and
/// whether that is its top-left corner, and every circle's centre and radius.
#[derive(Default)]
struct Drawn {
    texts: Vec<(String, (i32, i32), bool)>,
    circles: Vec<((i32, i32), u32)>,
}

struct Recorder<'a> {
    size: (u32, u32),
    drawn: &'a mut Drawn,
}

impl DrawingBackend for Recorder<'_> {
    type ErrorType = std::io::Error;

    fn get_size(&self) -> (u32, u32) {
        self.size
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<std::io::Error>> {
        Ok(())
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<std::io::Error>> {
        Ok(())
    }
    fn draw_pixel(
        &mut self,
        _: BackendCoord,
        _: BackendColor,
    ) -> Result<(), DrawingErrorKind<std::io::Error>> {
        Ok(())
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        _: &S,
        _: bool,
    ) -> Result<(), DrawingErrorKind<std::io::Error>> {
        self.drawn.circles.push((center, radius));
        Ok(())
    }
    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<std::io::Error>> {
        let a = style.anchor();
        let top_left = matches!((a.h_pos, a.v_pos), (HPos::Left, VPos::Top));
        self.drawn.texts.push((text.to_string(), pos, top_left));
        Ok(())
    }
    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<std::io::Error>> {
        let l = plot::canvas::layout(text, style.size() as f32);
        Ok((l.width.ceil() as u32, (l.ascent - l.descent).ceil() as u32))
    }
}

/// A table row at `weights` with mean rewards `rewards` (± 0.4).
fn row(weights: &[f64], rewards: &[f64], pareto: bool) -> Row {
    Row {
        weights: weights.to_vec(),
        rewards: rewards.iter().map(|&r| Some(r)).collect(),
        rewards_se: vec![Some(0.4); rewards.len()],
        mean_tokens: Some(48.0),
        generations: 6,
        errors: 0,
        pareto,
    }
}

/// Draws the figure of `rows` on the recorder, and writes it as `target/tmp/sweep/NAME.png`
/// and `.svg` to look at.
fn record(name: &str, rows: &[Row], experts: &[&str]) -> Drawn {
    let experts: Vec<String> = experts.iter().map(|e| e.to_string()).collect();
    let caption = ["model m.gguf".to_string()];
    let figure = plot::Figure { rows, experts: &experts, caption: &caption };
    let mut drawn = Drawn::default();
    let size = plot::size_pixels(experts.len());
    plot::draw_on(Recorder { size, drawn: &mut drawn }, &figure).unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sweep");
    std::fs::create_dir_all(&dir).unwrap();
    plot::pareto(&figure, &dir.join(name)).unwrap();
    drawn
}

/// The box of a weight label as drawn (anchored at its top left) in the 6.5 pt labels'
/// size at 300 dpi.
fn label_box(text: &str, (x, y): (i32, i32)) -> [f64; 4] {
    let l = plot::canvas::layout(text, (6.5 * 300.0 / 72.0) as f32);
    let (x, y) = (f64::from(x), f64::from(y));
    [x, y, x + f64::from(l.width), y + f64::from(l.ascent - l.descent)]
}

/// How far the box `b` is from the point `p`, in pixels.
fn distance(b: &[f64; 4], p: (i32, i32)) -> f64 {
    let (x, y) = (f64::from(p.0), f64::from(p.1));
    let dx = x - x.clamp(b[0], b[2]);
    let dy = y - y.clamp(b[1], b[3]);
    (dx * dx + dy * dy).sqrt()
}

#[test]
fn the_figure_labels_each_point_with_its_weight_and_its_axes_with_units() {
    // Two experts on a (w, 1 − w) grid: each point is labelled with the poet's weight, beside
    // its own marker; the axes say their unit.
    let rows = [
        row(&[0.15, 0.85], &[-9.0, 10.0], true),
        row(&[0.45, 0.55], &[1.0, 3.0], true),
        row(&[0.65, 0.35], &[3.5, 0.2], false),
        row(&[0.85, 0.15], &[12.0, -1.0], true),
    ];
    let drawn = record("labels-two", &rows, &["poet", "scientist"]);
    let texts: Vec<&str> = drawn.texts.iter().map(|t| t.0.as_str()).collect();
    for title in ["poet: mean implicit reward (nats)", "scientist: mean implicit reward (nats)"] {
        assert!(texts.contains(&title), "the axis title {title:?} in {texts:?}");
    }
    assert!(texts.contains(&"weight of poet"), "the legend says what the labels are: {texts:?}");
    // The markers of the panel (the legend's are in the side column, right of the panel),
    // one centre per point, left to right as the poet's reward grows with the rows.
    let panel = (plot::PANEL_INCHES.0 * plot::DPI) as i32;
    let mut centres: Vec<(i32, i32)> =
        drawn.circles.iter().map(|c| c.0).filter(|c| c.0 < panel).collect();
    centres.sort();
    centres.dedup();
    assert_eq!(centres.len(), rows.len(), "{centres:?}");
    let radius = drawn.circles.iter().map(|c| c.1).max().unwrap();
    for (i, want) in ["0.15", "0.45", "0.65", "0.85"].iter().enumerate() {
        let at: Vec<_> = drawn.texts.iter().filter(|t| t.0 == *want).collect();
        assert_eq!(at.len(), 1, "the label {want:?} once: {texts:?}");
        let (_, pos, top_left) = at[0];
        assert!(top_left, "{want:?} is anchored at its top left");
        let b = label_box(want, *pos);
        let nearest = (0..centres.len())
            .min_by(|&a, &c| distance(&b, centres[a]).total_cmp(&distance(&b, centres[c])))
            .unwrap();
        assert_eq!(nearest, i, "{want:?} at {pos:?} is beside its own point: {centres:?}");
        let gap = distance(&b, centres[i]);
        assert!(
            gap >= f64::from(radius) && gap < 2.0 * f64::from(radius),
            "{want:?} beside the marker, not on it: {gap} px from its centre"
        );
    }

    // Weights that the first one does not fix are given whole, two decimals at most.
    let free = [
        row(&[0.5, 0.8], &[0.0, 0.0], true),
        row(&[-0.5, 1.5], &[0.0, 0.0], true),
        row(&[1.0 / 3.0, 2.0 / 3.0], &[0.0, 0.0], true),
    ];
    assert_eq!(plot::weight_labels(&free), ["0.5,0.8", "\u{2212}0.5,1.5", "0.33,0.67"]);

    // Three experts: every panel labels its points with the whole weight vector, and no two
    // labels of the figure overlap each other or a marker.
    let simplex = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.0],
        [0.5, 0.0, 0.5],
        [0.0, 1.0, 0.0],
        [0.0, 0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let rows: Vec<Row> = simplex
        .iter()
        .map(|w| row(w, &[8.0 * w[0] - 3.0, 6.0 * w[1] - 2.0, 5.0 * w[2] - 1.0], true))
        .collect();
    let drawn = record("labels-three", &rows, &["poet", "scientist", "pirate"]);
    let texts: Vec<&str> = drawn.texts.iter().map(|t| t.0.as_str()).collect();
    assert!(texts.contains(&"pirate: mean implicit reward (nats)"), "{texts:?}");
    let want = ["1,0,0", "0.5,0.5,0", "0.5,0,0.5", "0,1,0", "0,0.5,0.5", "0,0,1"];
    let labels: Vec<_> = drawn.texts.iter().filter(|t| want.contains(&t.0.as_str())).collect();
    for w in want {
        assert_eq!(labels.iter().filter(|t| t.0 == w).count(), 3, "{w:?} in each of 3 panels");
    }
    let boxes: Vec<[f64; 4]> = labels.iter().map(|t| label_box(&t.0, t.1)).collect();
    assert_clear(&boxes, &drawn.circles);
}

#[test]
fn crowded_points_keep_their_labels_apart() {
    // Forty weight vectors whose points nearly coincide: the labels drawn stay clear of each
    // other and of every marker, inside the panel; those with no free spot are left out.
    let rows: Vec<Row> = (0..40)
        .map(|i| {
            let w = f64::from(i) / 39.0;
            row(&[w, 1.0 - w], &[w, 1.0 - w + 0.05 * f64::from(i % 3)], true)
        })
        .collect();
    let labels = plot::weight_labels(&rows);
    let drawn = record("labels-crowded", &rows, &["poet", "scientist"]);
    let panel = (plot::PANEL_INCHES.0 * plot::DPI) as i32;
    let shown: Vec<_> =
        drawn.texts.iter().filter(|t| t.1 .0 < panel && labels.contains(&t.0)).collect();
    assert!(shown.len() >= 8 && shown.len() < rows.len(), "{} labels shown", shown.len());
    let boxes: Vec<[f64; 4]> = shown.iter().map(|t| label_box(&t.0, t.1)).collect();
    for a in &boxes {
        assert!(a[0] >= 0.0 && a[2] <= f64::from(panel), "{a:?}");
    }
    assert_clear(&boxes, &drawn.circles);
}

/// Every label box stands apart from the others by the gap between a marker and its label
/// (1.2 pt, less rounding) and off every marker.
fn assert_clear(boxes: &[[f64; 4]], circles: &[((i32, i32), u32)]) {
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            let gap = 4.0;
            let apart = a[2] + gap <= b[0]
                || b[2] + gap <= a[0]
                || a[3] + gap <= b[1]
                || b[3] + gap <= a[1];
            assert!(apart, "labels too close: {a:?} {b:?}");
        }
        for &(c, r) in circles {
            assert!(distance(a, c) >= f64::from(r) - 1.0, "a label on a marker: {a:?} {c:?}");
        }
    }
}

#[test]
fn killed_sweep_resumes_to_the_uninterrupted_table() {
    let prompts = ["The ocean", "The moon", "A river"];
    // Without speculation: how much a step drafts follows the pass times measured in the run,
    // and a wider verification pass can move a logit by llama.cpp's batch noise, enough to
    // flip a greedy near-tie; the table would then depend on timing, not on the resumption.
    let args = ["--grid", "0:1:0.5", "-n", "24", "--parallel", "1", "--draft-max", "0"];
    let (input, full) = setup("kill", &prompts);
    ok(&sweep(&input, &full, &args));

    let out = full.with_file_name("resumed");
    let mut child = sweep_command(&demo_recipe(), &input, &out, &args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let generations = out.join("generations.jsonl");
    let started = Instant::now();
    loop {
        let n = std::fs::read_to_string(&generations).map(|s| s.lines().count()).unwrap_or(0);
        if n >= 2 || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = std::fs::read_to_string(&generations).unwrap().lines().count();
    assert!(partial < 9, "the sweep finished before it could be killed");
    assert!(!out.join("sweep.csv").exists());
    // A record cut short, as a kill mid-write leaves it.
    let mut f = std::fs::OpenOptions::new().append(true).open(&generations).unwrap();
    std::io::Write::write_all(&mut f, b"{\"weights\":[1.0,0.0],\"id\":\"p2\",\"text\":\"cut")
        .unwrap();
    drop(f);

    let o = sweep(&input, &out, &args);
    assert_eq!(o.status.code(), Some(1), "an existing sweep needs --resume");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
    let mut resume = args.to_vec();
    resume.push("--resume");
    let o = sweep(&input, &out, &resume);
    ok(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("incomplete") && stderr.contains(&format!("{} to decode", 9 - partial)),
        "{stderr}"
    );
    for file in ["sweep.csv", "sweep.jsonl"] {
        assert_eq!(
            std::fs::read_to_string(out.join(file)).unwrap(),
            std::fs::read_to_string(full.join(file)).unwrap(),
            "{file}"
        );
    }
    let key = |r: &Value| format!("{}|{}", r["weights"], r["id"]);
    let mut got: Vec<Value> = read_jsonl(&generations);
    let mut want: Vec<Value> = read_jsonl(&full.join("generations.jsonl"));
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got.len(), 9);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((key(g), &g["tokens"], &g["rewards"]), (key(w), &w["tokens"], &w["rewards"]));
    }

    // Resuming a finished sweep decodes nothing and rewrites the same table.
    std::fs::remove_file(out.join("sweep.csv")).unwrap();
    let o = sweep(&input, &out, &resume);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("0 to decode"));
    assert_eq!(
        std::fs::read_to_string(out.join("sweep.csv")).unwrap(),
        std::fs::read_to_string(full.join("sweep.csv")).unwrap()
    );
}

#[test]
fn three_experts_get_the_pairwise_grid() {
    let (input, out) = setup("three", &["The ocean"]);
    let recipe = input.with_file_name("three.toml");
    let model = default_model();
    let expert = |name: &str, prefix: &str| {
        format!(
            "[[expert]]\nname = \"{name}\"\nmodel = {:?}\nprefix = {prefix:?}\nweight = 0.5\n",
            model
        )
    };
    std::fs::write(
        &recipe,
        format!(
            "[reference]\nmodel = {:?}\n{}{}{}",
            model,
            expert("poet", POET),
            expert("scientist", SCIENTIST),
            expert("pirate", "A pirate tells his story:\n\n")
        ),
    )
    .unwrap();
    let o = sweep_command(&recipe, &input, &out, &["--simplex", "1", "-n", "4", "--parallel", "3"])
        .output()
        .unwrap();
    ok(&o);
    let (header, rows) = read_csv(&out.join("sweep.csv"));
    assert_eq!(&header[..3], ["w_poet", "w_scientist", "w_pirate"]);
    assert_eq!(rows.len(), 3, "the simplex's corners");
    // One prompt: no standard error.
    assert!(rows.iter().all(|r| r[4].is_empty() && r[6].is_empty() && r[8].is_empty()), "{rows:?}");
    check_figure(&out, 3, &rows.iter().map(|r| r[12] == "true").collect::<Vec<_>>());
}

#[test]
fn bad_input_is_refused_before_decoding() {
    let (input, out) = setup("bad", &["The ocean"]);
    let err = |o: &std::process::Output| {
        assert_eq!(o.status.code(), Some(1));
        let e = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!e.contains("panicked") && e.trim().lines().count() == 1, "{e}");
        e
    };
    let cases: [(&[&str], &str); 7] = [
        (&["--grid", "1:0:0.1"], "--grid"),
        (&[], "--grid, --simplex or --list"),
        (&["--list", "0.5,0.5;0.2,0.8;0.5,0.5"], "--list gives the weight vector [0.5, 0.5] twice"),
        (&["--list", "0.5,x"], "--list"),
        (&["--grid", "0:1:0.5", "--beta", "0"], "--beta must be a positive number"),
        (&["--list", "1.5,-0.5", "-d", "jsd"], "weights"),
        (&["--list", "0.5,0.5,0"], "3 value(s)"),
    ];
    for (args, want) in cases {
        let e = err(&sweep(&input, &out, args));
        assert!(e.contains(want), "{args:?}: {e}");
    }
    assert!(!out.join("generations.jsonl").exists(), "nothing was decoded");
    let bad = input.with_file_name("bad.jsonl");
    std::fs::write(&bad, b"{\"prompt\": \"ok\"}\n{\"prompt\": \"caf\xe9\"}\n").unwrap();
    let e = err(&sweep(&bad, &out, &["--grid", "0:1:0.5"]));
    assert!(e.contains("bad.jsonl line 2"), "{e}");
    let e = err(&sweep(&input.with_file_name("missing.jsonl"), &out, &["--grid", "0:1:0.5"]));
    assert!(e.contains("cannot open"), "{e}");
    let single = input.with_file_name("single.toml");
    std::fs::write(
        &single,
        format!(
            "[reference]\nmodel = {:?}\n[[expert]]\nname = \"a\"\nmodel = {:?}\nweight = 1\n",
            default_model(),
            default_model()
        ),
    )
    .unwrap();
    let e = err(&sweep_command(&single, &input, &out, &["--list", "1"]).output().unwrap());
    assert!(e.contains("at least 2"), "{e}");

    // Generations made with other settings are never mixed in, and never overwritten.
    ok(&sweep(&input, &out, &["--grid", "0:1:1", "-n", "3"]));
    let before = std::fs::read(out.join("generations.jsonl")).unwrap();
    let e = err(&sweep(&input, &out, &["--grid", "0:1:1", "-n", "5", "--resume"]));
    assert!(e.contains("max_tokens 3, this sweep has 5"), "{e}");
    assert_eq!(std::fs::read(out.join("generations.jsonl")).unwrap(), before);
}
