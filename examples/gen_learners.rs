//! Generates a learners CSV for `examples/learners_graph.rs`.
//!
//! ```text
//! cargo run --release --example gen_learners -- --rows 10000 --out /tmp/learners.csv [--seed 7]
//! ```
//!
//! Header: `learner_id,full_name,gender,city,country,skills,employment,enrollments,learning_state,
//! professional_status,snapshot_date`. Deterministic per seed, with realistic skew (a few huge
//! companies and popular skills, a long tail of small ones), hostile strings (quotes, backticks,
//! commas, newlines, emoji, non-Latin scripts), empty fields, repeated skills and jobs within a learner,
//! and about 2% duplicate rows (identical copies of an earlier row). `--rows` counts every written row,
//! duplicates included.

#[path = "support/learners_csv.rs"]
mod learners_csv;
use learners_csv::HEADER;

/// A small deterministic PRNG (splitmix64): the data must not change when a crate's RNG does.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    /// Skewed towards 0: index in `0..n` with a roughly Zipf-like (1/x) distribution.
    fn skewed(&mut self, n: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (((n as f64 + 1.0).powf(u) - 1.0) as usize).min(n - 1)
    }
}

const FIRST: &[&str] = &[
    "Ann",
    "Bob",
    "Chloé",
    "Dmitri",
    "Émile",
    "Fatima",
    "Giorgos",
    "Hana",
    "Ivan",
    "Jürgen",
    "Kwame",
    "Lena",
    "Mei",
    "Nadia",
    "Olu",
    "Priya",
    "Quentin",
    "Raúl",
    "Sven",
    "Tomás",
    "Uma",
    "Vikram",
    "Wen",
    "Xóchitl",
    "Yara",
    "Zoë 🌟",
    "Mary-Kate",
    "\"Doc\"",
    "Li",
    "Nguyễn",
];
const LAST: &[&str] = &[
    "O'Brien",
    "Smith",
    "Müller",
    "García",
    "D'Angelo",
    "Kowalski",
    "Ivanova",
    "Tanaka",
    "Okafor",
    "Smith, Jr.",
    "Back`tick",
    "van der Berg",
    "Ó Súilleabháin",
    "李",
    "Петров",
    "Al-Farsi",
    "Lee 😀",
    "Ng",
    "Brown \"Bo\"",
    "Dupont\nNewline",
];
const CITIES: &[(&str, &str)] = &[
    ("Lagos", "Nigeria"),
    ("Abuja", "Nigeria"),
    ("Nairobi", "Kenya"),
    ("Mombasa", "Kenya"),
    ("Cairo", "Egypt"),
    ("Accra", "Ghana"),
    ("Kumasi", "Ghana"),
    ("São Paulo", "Brazil"),
    ("Rio de Janeiro", "Brazil"),
    ("Bogotá", "Colombia"),
    ("Ciudad de México", "Mexico"),
    ("Berlin", "Germany"),
    ("München", "Germany"),
    ("Paris", "France"),
    ("Lyon", "France"),
    ("London", "United Kingdom"),
    ("Derry/Londonderry", "United Kingdom"),
    ("Dublin", "Ireland"),
    ("Kraków", "Poland"),
    ("Kyiv", "Ukraine"),
    ("İstanbul", "Türkiye"),
    ("Delhi", "India"),
    ("Bengaluru", "India"),
    ("Mumbai", "India"),
    ("Dhaka", "Bangladesh"),
    ("Karachi", "Pakistan"),
    ("東京", "日本"),
    ("Osaka", "日本"),
    ("Seoul", "South Korea"),
    ("Hà Nội", "Việt Nam"),
    ("Manila", "Philippines"),
    ("Jakarta", "Indonesia"),
    ("Sydney", "Australia"),
    ("Toronto", "Canada"),
    ("St. John's", "Canada"),
    ("New York", "United States"),
    ("Washington, D.C.", "United States"),
    ("Austin", "United States"),
    ("Springfield", "United States"),
    ("Springfield", "Australia"),
];
const SKILL_ROOTS: &[&str] = &[
    "Python",
    "SQL",
    "Excel",
    "JavaScript",
    "Communication",
    "Data Analysis",
    "Java",
    "C#",
    "C++",
    "Rust",
    "Go",
    "Project Management",
    "Machine Learning",
    "Figma",
    "Node.js",
    "React",
    "Docker",
    "Kubernetes",
    "AWS",
    "Public Speaking",
    "Customer Service",
    "Bookkeeping",
    "R&D",
    "\"Soft\" skills",
    "Back`ticks",
    "日本語",
    "Español",
    "Statistics",
    "Power BI",
    "Tableau",
];
const TITLES: &[&str] = &[
    "Engineer",
    "Senior Engineer",
    "Analyst",
    "Intern",
    "Manager",
    "Director, Ops",
    "Teacher",
    "Nurse",
    "Sales \"Rep\"",
    "Designer",
    "Data Scientist",
    "Support Agent",
];
const BIG_COMPANIES: &[&str] = &[
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella",
    "O'Reilly Media",
    "Smith & Sons, Ltd.",
    "Café Ünïcode 😀",
    "`Tick` Inc",
];
const PROGRAMS: &[&str] = &[
    "Data Science Bootcamp",
    "Software Engineering",
    "Cloud Computing",
    "UX Design",
    "Product Management",
    "Cybersecurity",
    "Digital Marketing",
    "AI for Everyone",
    "Full-Stack \"Web\" Dev",
    "Business Analytics",
];
const STATES: &[&str] = &["enrolled", "graduated", "dropped_out", "paused", "not_started"];
const STATUSES: &[&str] = &["employed", "unemployed", "self-employed", "student", "freelancer, part-time"];

fn skill(rng: &mut Rng) -> String {
    let i = rng.skewed(600);
    if i < SKILL_ROOTS.len() { SKILL_ROOTS[i].to_owned() } else { format!("Skill {i}") }
}

fn company(rng: &mut Rng) -> String {
    // A few huge employers take a large share; then a long tail of small companies.
    if rng.chance(0.35) {
        BIG_COMPANIES[rng.skewed(BIG_COMPANIES.len())].to_owned()
    } else {
        format!(
            "Company {} {}",
            rng.skewed(20_000),
            ["Ltd", "LLC", "GmbH", "S.A.", "Co., \"Ltd\""][rng.below(5)]
        )
    }
}

fn program(rng: &mut Rng) -> String {
    let i = rng.skewed(120);
    if i < PROGRAMS.len() { PROGRAMS[i].to_owned() } else { format!("Program #{i}") }
}

fn date(rng: &mut Rng, from_year: i32, to_year: i32) -> (i32, String) {
    let y = from_year + rng.below((to_year - from_year + 1) as usize) as i32;
    (y, format!("{y:04}-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)))
}

/// One learner row (the 11 CSV fields, JSON columns already serialized).
pub(crate) fn learner(rng: &mut Rng, id: usize) -> [String; 11] {
    let name = format!("{} {}", FIRST[rng.below(FIRST.len())], LAST[rng.below(LAST.len())]);
    let gender = ["F", "M", "X", ""][rng.below(4)].to_owned();
    let (city, country) = if rng.chance(0.04) {
        (String::new(), String::new())
    } else {
        let (c, k) = CITIES[rng.skewed(CITIES.len())];
        (c.to_owned(), if rng.chance(0.02) { String::new() } else { k.to_owned() })
    };
    let mut skills: Vec<String> = (0..rng.below(9)).map(|_| skill(rng)).collect();
    if !skills.is_empty() && rng.chance(0.1) {
        skills.push(skills[0].clone()); // a repeated skill
    }
    let mut jobs = Vec::new();
    let mut year = 2005 + rng.below(12) as i32;
    let n_jobs = rng.below(5);
    for j in 0..n_jobs {
        let (y, start) = date(rng, year, year + 2);
        let current = j + 1 == n_jobs && rng.chance(0.6);
        let end = if current { serde_json::Value::Null } else { date(rng, y + 1, y + 3).1.into() };
        year = y + 2;
        jobs.push(serde_json::json!({
            "company": company(rng), "title": TITLES[rng.below(TITLES.len())], "start_date": start, "end_date": end
        }));
    }
    if !jobs.is_empty() && rng.chance(0.05) {
        jobs.push(jobs[0].clone()); // the same job listed twice
    }
    let mut enrollments = Vec::new();
    for _ in 0..rng.below(4) {
        let (y, start) = date(rng, 2015, 2024);
        let done = rng.chance(0.6);
        let end = if done { serde_json::Value::from(date(rng, y, y + 1).1) } else { serde_json::Value::Null };
        let grad = if done && rng.chance(0.7) { end.clone() } else { serde_json::Value::Null };
        enrollments.push(serde_json::json!({
            "program": program(rng), "start_date": start, "end_date": end, "graduation_date": grad
        }));
    }
    let json = |v: &Vec<serde_json::Value>| {
        if v.is_empty() && rng_flag(id) {
            String::new()
        } else {
            serde_json::Value::from(v.clone()).to_string()
        }
    };
    [
        format!("L{id:07}"),
        name,
        gender,
        city,
        country,
        skills.join(";"),
        json(&jobs),
        json(&enrollments),
        STATES[rng.skewed(STATES.len())].to_owned(),
        if rng.chance(0.03) { String::new() } else { STATUSES[rng.below(STATUSES.len())].to_owned() },
        "2024-06-30".to_owned(),
    ]
}

/// Empty JSON columns are written either as `[]` or as an empty field.
fn rng_flag(id: usize) -> bool {
    id.is_multiple_of(2)
}

/// Writes `rows` rows (about 2% of them identical copies of earlier rows) to `out`.
pub(crate) fn write_learners(out: &std::path::Path, rows: usize, seed: u64) -> std::io::Result<usize> {
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let mut w = csv::WriterBuilder::new().from_writer(file);
    w.write_record(HEADER)?;
    let mut rng = Rng::new(seed);
    let mut recent: Vec<[String; 11]> = Vec::new();
    let mut next_id = 1;
    let mut distinct = 0;
    for _ in 0..rows {
        if !recent.is_empty() && rng.chance(0.02) {
            let copy = recent[rng.below(recent.len())].clone();
            w.write_record(&copy)?;
            continue;
        }
        let row = learner(&mut rng, next_id);
        next_id += 1;
        distinct += 1;
        w.write_record(&row)?;
        if recent.len() < 1000 {
            recent.push(row);
        } else {
            let i = rng.below(recent.len());
            recent[i] = row;
        }
    }
    w.flush()?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(distinct)
}

fn main() -> etlkit_core::Reported {
    run().into()
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut rows = 10_000usize;
    let mut out = None;
    let mut seed = 7u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rows" => rows = val()?.parse()?,
            "--out" => out = Some(std::path::PathBuf::from(val()?)),
            "--seed" => seed = val()?.parse()?,
            "-h" | "--help" => {
                println!("gen_learners --rows N --out FILE.csv [--seed S]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    let out = out.ok_or("--out FILE.csv is required")?;
    let t = std::time::Instant::now();
    let distinct = write_learners(&out, rows, seed)?;
    println!(
        "gen_learners rows={rows} distinct_learners={distinct} out={} seed={seed} elapsed_s={:.2}",
        out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
