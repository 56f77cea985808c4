"""A deterministic synthetic world of companies and people for the simulators.

Everything is generated from one seed with `random.Random(seed)`: no network,
no data files.  Domains use reserved-looking TLDs (.example / .test) so that no
real organisation is named.

`build_dataset()` is cached; treat the returned `Dataset` as read-only.
"""
from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass, field

DEFAULT_SEED = 20261121

# Enum values of docs/clodura.md#organisation-search (spaces around the hyphen are part of the value).
EMPLOYEE_BANDS: list[tuple[str, int, int]] = [
    ("0 - 1", 0, 1),
    ("2 - 10", 2, 10),
    ("11 - 50", 11, 50),
    ("51 - 200", 51, 200),
    ("201 - 500", 201, 500),
    ("501 - 1000", 501, 1000),
    ("1001 - 5000", 1001, 5000),
    ("5001 - 10000", 5001, 10000),
    ("10000+", 10001, 150000),
]
_BAND_WEIGHTS = [1, 4, 12, 22, 20, 14, 14, 7, 6]
# How many people the dataset holds per company, by employee band.
_PEOPLE_PER_BAND = [(1, 1), (2, 6), (4, 10), (7, 14), (9, 16), (10, 18), (12, 20), (12, 22), (12, 24)]

REVENUE_BANDS: list[tuple[str, int, int]] = [
    ("< 1M", 50_000, 999_999),
    ("1M-10M", 1_000_000, 10_000_000),
    ("11M-100M", 11_000_000, 100_000_000),
    ("101M-500M", 101_000_000, 500_000_000),
    ("501M-1B", 501_000_000, 1_000_000_000),
    ("1B+", 1_000_000_001, 25_000_000_000),
]
# Typical revenue band index for each employee band index.
_REVENUE_FOR_BAND = [0, 0, 1, 2, 2, 3, 3, 4, 5]

VERDICT_DELIVERABLE = "Deliverable"
VERDICT_UNDELIVERABLE = "Undeliverable"
VERDICT_CATCH_ALL = "Risky (Catch-all)"

_NAME_STEMS = [
    "Northwind", "Bluepeak", "Silverline", "Harborview", "Redwood", "Summit", "Crescent",
    "Ironbridge", "Lumen", "Cobalt", "Evergreen", "Brightwater", "Stonegate", "Oakridge",
    "Clearpath", "Highland", "Riverstone", "Starling", "Granite", "Meridian", "Pinecrest",
    "Westfield", "Foxglove", "Amberly", "Copperleaf", "Driftwood", "Falcon", "Greyhawk",
    "Juniper", "Kestrel", "Larkspur", "Maplewood", "Nimbus", "Orchard", "Quarry",
    "Saltmarsh", "Tidewater", "Upland", "Vantage", "Willowby", "Yarrow", "Zephyr",
    "Aster", "Beacon", "Cedarline", "Dovetail", "Emberly", "Fernhill", "Goldcrest",
    "Hollowell", "Inkwell", "Jetstream", "Keystone", "Lodestar", "Mistral", "Northgate",
    "Opaline", "Prairie", "Quillon", "Rookwood", "Sablefield", "Thornbury",
]
# Sector word -> industry (Clodura-style industry names).
_SECTORS = {
    "Analytics": "Computer Software",
    "Software": "Computer Software",
    "Systems": "Information Technology and Services",
    "Networks": "Telecommunications",
    "Labs": "Research",
    "Robotics": "Industrial Automation",
    "Logistics": "Logistics and Supply Chain",
    "Freight": "Transportation/Trucking/Railroad",
    "Health": "Hospital & Health Care",
    "Bio": "Biotechnology",
    "Medical": "Medical Devices",
    "Capital": "Financial Services",
    "Payments": "Financial Services",
    "Insurance": "Insurance",
    "Energy": "Renewables & Environment",
    "Foods": "Food & Beverages",
    "Media": "Marketing and Advertising",
    "Studios": "Entertainment",
    "Learning": "E-Learning",
    "Retail": "Retail",
    "Apparel": "Apparel & Fashion",
    "Builders": "Construction",
    "Realty": "Real Estate",
    "Consulting": "Management Consulting",
    "Security": "Computer & Network Security",
    "Dynamics": "Mechanical or Industrial Engineering",
    "Materials": "Chemicals",
    "Aerospace": "Aviation & Aerospace",
    "Games": "Computer Games",
    "Legal": "Law Practice",
}
_NAME_SUFFIXES = ["", "", "", "", "Inc", "Group", "Co", "LLC", "Corp"]

_LOCATIONS = [
    ("San Francisco", "California", "United States"),
    ("Austin", "Texas", "United States"),
    ("New York", "New York", "United States"),
    ("Seattle", "Washington", "United States"),
    ("Boston", "Massachusetts", "United States"),
    ("Chicago", "Illinois", "United States"),
    ("Denver", "Colorado", "United States"),
    ("Atlanta", "Georgia", "United States"),
    ("Raleigh", "North Carolina", "United States"),
    ("Salt Lake City", "Utah", "United States"),
    ("Toronto", "Ontario", "Canada"),
    ("Vancouver", "British Columbia", "Canada"),
    ("London", "England", "United Kingdom"),
    ("Manchester", "England", "United Kingdom"),
    ("Berlin", "Berlin", "Germany"),
    ("Munich", "Bavaria", "Germany"),
    ("Bengaluru", "Karnataka", "India"),
    ("Pune", "Maharashtra", "India"),
    ("Sydney", "New South Wales", "Australia"),
    ("Dublin", "Leinster", "Ireland"),
]
_TECHNOLOGIES = [
    "Salesforce", "HubSpot", "AWS", "Google Cloud", "Microsoft Azure", "Slack", "Zoom",
    "Jira", "Confluence", "GitHub", "Snowflake", "Databricks", "Tableau", "Looker",
    "Segment", "Stripe", "Zendesk", "Intercom", "Marketo", "Okta", "Workday",
    "Kubernetes", "PostgreSQL", "MongoDB", "React", "Shopify", "Twilio", "Datadog",
]

_FIRST_NAMES = [
    "Dana", "Alex", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Jamie", "Avery", "Quinn",
    "Maria", "James", "Priya", "Wei", "Sofia", "Liam", "Olivia", "Noah", "Emma", "Ethan",
    "Ava", "Lucas", "Mia", "Mateo", "Chloe", "Arjun", "Aisha", "Kenji", "Yuki", "Hannah",
    "Daniel", "Grace", "Samuel", "Leah", "Omar", "Fatima", "Diego", "Elena", "Viktor", "Ingrid",
    "Tomas", "Nadia", "Rahul", "Anika", "Chen", "Mei", "Pedro", "Lucia", "Marcus", "Julia",
    "Isaac", "Nora", "Felix", "Clara", "Hugo", "Ruth", "Oscar", "Iris", "Leo", "Zoe",
    "Adrian", "Bianca", "Caleb", "Delia", "Elias", "Farah", "Gavin", "Helena", "Ivan", "Jasmine",
    "Kofi", "Lena", "Malik", "Nina", "Owen", "Paula", "Rosa", "Sanjay", "Tara", "Umar",
    "Vera", "Wesley", "Ximena", "Yusuf", "Zara", "Beatriz", "Connor", "Divya", "Erik", "Gemma",
]
_LAST_NAMES = [
    "Ortiz", "Smith", "Johnson", "Lee", "Garcia", "Patel", "Nguyen", "Kim", "Brown", "Martinez",
    "Davis", "Lopez", "Wilson", "Anderson", "Thomas", "Moore", "Jackson", "Martin", "Thompson", "White",
    "Harris", "Clark", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott",
    "Torres", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell",
    "Mitchell", "Carter", "Roberts", "Gomez", "Phillips", "Evans", "Turner", "Diaz", "Parker", "Cruz",
    "Edwards", "Collins", "Reyes", "Stewart", "Morris", "Morales", "Murphy", "Cook", "Rogers", "Gutierrez",
    "Ortega", "Morgan", "Cooper", "Peterson", "Bailey", "Reed", "Kelly", "Howard", "Ramos", "Cox",
    "Ward", "Richardson", "Watson", "Brooks", "Chavez", "Wood", "Bennett", "Gray", "Mendoza", "Ruiz",
    "Hughes", "Price", "Alvarez", "Castillo", "Sanders", "Shah", "Myers", "Long", "Ross", "Foster",
    "Kowalski", "Novak", "Schmidt", "Muller", "Rossi", "Silva", "Santos", "Tanaka", "Sato", "Suzuki",
    "Ivanova", "Petrov", "Haddad", "Okafor", "Mensah", "Nakamura", "Larsen", "Berg", "Dubois", "Moreau",
    "O'Brien", "McCarthy", "Fitzgerald", "Van Dijk", "De Luca", "Chandra", "Iyer", "Rao", "Khan", "Ali",
]

# department -> (area phrase, individual-contributor role, C-level title)
_DEPARTMENTS = {
    "Sales": ("Sales", "Account Executive", "Chief Revenue Officer"),
    "Marketing": ("Marketing", "Marketing Specialist", "Chief Marketing Officer"),
    "Engineering": ("Engineering", "Software Engineer", "Chief Technology Officer"),
    "Finance": ("Finance", "Financial Analyst", "Chief Financial Officer"),
    "HR": ("People Operations", "HR Generalist", "Chief People Officer"),
    "IT": ("IT", "Systems Administrator", "Chief Information Officer"),
    "Operations": ("Operations", "Operations Analyst", "Chief Operating Officer"),
    "Product Management": ("Product", "Product Manager", "Chief Product Officer"),
    "Support": ("Customer Support", "Support Specialist", "Chief Customer Officer"),
    "Analytics": ("Analytics", "Data Analyst", "Chief Data Officer"),
    "Security": ("Security", "Security Engineer", "Chief Information Security Officer"),
    "Admin": ("Administration", "Office Administrator", "Chief Administrative Officer"),
}
_DEPARTMENT_WEIGHTS = [22, 14, 20, 7, 5, 6, 8, 5, 6, 4, 2, 1]
# (seniority, weight, title format); {area}, {ic}, {cxo} come from _DEPARTMENTS
_SENIORITIES = [
    ("CXO", 2, "{cxo}"),
    ("Vice President", 5, "Vice President of {area}"),
    ("Director", 10, "Director of {area}"),
    ("Head", 5, "Head of {area}"),
    ("Manager", 20, "{area} Manager"),
    ("Senior", 23, "Senior {ic}"),
    ("Junior", 20, "{ic}"),
    ("Entry Level", 15, "Associate {ic}"),
]


@dataclass
class Company:
    organisation_id: str
    name: str
    domain: str
    linkedin_url: str
    industry: str
    employee_size: str
    employee_count: int
    revenue: str
    annual_revenue: int
    founded_year: int
    city: str
    state: str
    country: str
    technologies: list[str] = field(default_factory=list)
    total_funding: str | None = None
    catch_all: bool = False


@dataclass
class Person:
    person_id: str
    first_name: str
    last_name: str
    title: str
    department: str
    seniority: str
    linkedin_url: str
    email: str
    email_verdict: str
    mobile_phone: str
    organisation_id: str
    known: bool = True


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _local_part(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def normalize_linkedin(url: str | None) -> str | None:
    """Canonical form for comparing LinkedIn URLs: lower case, no scheme,
    no `www.`, no query/fragment, no trailing slash."""
    if not url:
        return None
    u = url.strip().lower()
    u = re.sub(r"^[a-z]+://", "", u)
    u = re.sub(r"^www\.", "", u)
    u = re.split(r"[?#]", u, maxsplit=1)[0]
    return u.rstrip("/") or None


def _norm(text: str | None) -> str | None:
    if text is None:
        return None
    t = " ".join(text.split()).lower()
    return t or None


def _norm_domain(domain: str | None) -> str | None:
    d = _norm(domain)
    if d is None:
        return None
    d = re.sub(r"^[a-z]+://", "", d)
    d = re.sub(r"^www\.", "", d)
    return d.split("/", 1)[0].rstrip(".") or None


class Dataset:
    """Companies and people plus lookup indexes.  Only `known` people can be
    found through `find_person`; every person's address still has a verdict."""

    def __init__(self, seed: int, companies: list[Company], people: list[Person]):
        self.seed = seed
        self.companies = companies
        self.people = people
        self._company_by_id = {c.organisation_id: c for c in companies}
        self._company_by_domain = {c.domain.lower(): c for c in companies}
        self._company_by_name = {_norm(c.name): c for c in companies}
        self._company_by_linkedin = {normalize_linkedin(c.linkedin_url): c for c in companies}
        self._person_by_id = {p.person_id: p for p in people}
        self._person_by_email = {p.email.lower(): p for p in people}
        self._person_by_linkedin = {normalize_linkedin(p.linkedin_url): p for p in people}
        self._person_by_name: dict[tuple[str, str | None, str | None], Person] = {}
        self._people_by_company: dict[str, list[Person]] = {}
        for p in people:
            self._person_by_name[(p.organisation_id, _norm(p.first_name), _norm(p.last_name))] = p
            self._people_by_company.setdefault(p.organisation_id, []).append(p)

    # -- companies -------------------------------------------------------
    def company(self, organisation_id: str) -> Company | None:
        return self._company_by_id.get(organisation_id)

    def company_by_domain(self, domain: str | None) -> Company | None:
        d = _norm_domain(domain)
        return self._company_by_domain.get(d) if d else None

    def company_by_name(self, name: str | None) -> Company | None:
        n = _norm(name)
        return self._company_by_name.get(n) if n else None

    def company_by_linkedin(self, url: str | None) -> Company | None:
        u = normalize_linkedin(url)
        return self._company_by_linkedin.get(u) if u else None

    def people_at(self, organisation_id: str) -> list[Person]:
        return list(self._people_by_company.get(organisation_id, []))

    # -- people ----------------------------------------------------------
    def person(self, person_id: str) -> Person | None:
        p = self._person_by_id.get(person_id)
        return p if p is not None and p.known else None

    def find_person(
        self,
        *,
        linkedin_url: str | None = None,
        email: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
        organisation_name: str | None = None,
        org_linkedin_url: str | None = None,
        company_domain: str | None = None,
    ) -> Person | None:
        """The match rules of docs/clodura.md#person-enrich, strongest identifier first:
        person LinkedIn URL alone; email alone; first + last name together
        with one company identifier (organisation name, company LinkedIn URL
        or company domain).  Names compare case-insensitively.  People with
        `known=False` are never found."""
        candidates: list[Person | None] = []
        li = normalize_linkedin(linkedin_url)
        if li:
            candidates.append(self._person_by_linkedin.get(li))
        if email and email.strip():
            candidates.append(self._person_by_email.get(email.strip().lower()))
        first, last = _norm(first_name), _norm(last_name)
        if first and last:
            for company in (
                self.company_by_linkedin(org_linkedin_url),
                self.company_by_domain(company_domain),
                self.company_by_name(organisation_name),
            ):
                if company is not None:
                    candidates.append(self._person_by_name.get((company.organisation_id, first, last)))
        for p in candidates:
            if p is not None and p.known:
                return p
        return None

    def verdict_for_email(self, email: str) -> str:
        """What Clodura's verifier says about an address: the person's own
        verdict for a dataset address; catch-all for anything at a catch-all
        domain; Undeliverable for everything else (typos, unknown domains)."""
        addr = (email or "").strip().lower()
        p = self._person_by_email.get(addr)
        if p is not None:
            return p.email_verdict
        domain = addr.rsplit("@", 1)[-1] if "@" in addr else ""
        company = self._company_by_domain.get(domain)
        if company is not None and company.catch_all:
            return VERDICT_CATCH_ALL
        return VERDICT_UNDELIVERABLE

    # -- what other providers know (the waterfall) --------------------------
    def anyone_by_email(self, email: str | None) -> Person | None:
        """The person behind an address, known to Clodura or not (Clearout's
        reverse lookup knows everyone in the dataset)."""
        return self._person_by_email.get((email or "").strip().lower())

    def anyone_by_linkedin(self, url: str | None) -> Person | None:
        u = normalize_linkedin(url)
        return self._person_by_linkedin.get(u) if u else None

    # -- demo ------------------------------------------------------------
    def demo_contacts(self, n: int, seed: int = 7) -> list[dict]:
        return _demo_contacts(self, n, seed)


def _unique_hex(rng: random.Random, prefix: str, digits: int, seen: set[str]) -> str:
    while True:
        value = f"{prefix}{rng.getrandbits(digits * 4):0{digits}x}"
        if value not in seen:
            seen.add(value)
            return value


def _build_companies(rng: random.Random, count: int) -> list[Company]:
    companies: list[Company] = []
    ids: set[str] = set()
    used_bases: set[str] = set()
    sectors = list(_SECTORS)
    band_idx = list(range(len(EMPLOYEE_BANDS)))
    while len(companies) < count:
        stem, sector = rng.choice(_NAME_STEMS), rng.choice(sectors)
        base = f"{stem} {sector}"
        if base in used_bases:
            continue
        used_bases.add(base)
        suffix = rng.choice(_NAME_SUFFIXES)
        name = f"{base} {suffix}".strip()
        slug = _slug(base)
        tld = ".test" if rng.random() < 0.25 else ".example"
        bi = rng.choices(band_idx, weights=_BAND_WEIGHTS)[0]
        band, lo, hi = EMPLOYEE_BANDS[bi]
        ri = min(max(_REVENUE_FOR_BAND[bi] + rng.choice([-1, 0, 0, 0, 1]), 0), len(REVENUE_BANDS) - 1)
        rev_band, rlo, rhi = REVENUE_BANDS[ri]
        city, state, country = rng.choice(_LOCATIONS)
        if rng.random() < 0.4:
            total_funding = None
        else:
            amount = rng.choice([1, 2, 3, 5, 8, 12, 20, 30, 45, 60, 90, 120, 250, 400])
            total_funding = f"{amount}M"
        companies.append(
            Company(
                organisation_id=_unique_hex(rng, "o_", 6, ids),
                name=name,
                domain=slug + tld,
                linkedin_url=f"https://www.linkedin.com/company/{slug}/",
                industry=_SECTORS[sector],
                employee_size=band,
                employee_count=rng.randint(max(lo, 1), hi),
                revenue=rev_band,
                annual_revenue=rng.randint(rlo, rhi),
                founded_year=rng.choice([rng.randint(1950, 2023), rng.randint(2000, 2023)]),
                city=city,
                state=state,
                country=country,
                technologies=sorted(rng.sample(_TECHNOLOGIES, rng.randint(2, 7))),
                total_funding=total_funding,
                catch_all=rng.random() < 0.10,
            )
        )
    return companies


def _build_people(rng: random.Random, companies: list[Company], minimum: int) -> list[Person]:
    band_index = {b[0]: i for i, b in enumerate(EMPLOYEE_BANDS)}
    plan = []
    for c in companies:
        lo, hi = _PEOPLE_PER_BAND[band_index[c.employee_size]]
        plan.append(rng.randint(lo, hi))
    # Top up the bigger companies until the dataset holds `minimum` people.
    big = [i for i, c in enumerate(companies) if band_index[c.employee_size] >= 3]
    while sum(plan) < minimum:
        plan[rng.choice(big)] += 1

    people: list[Person] = []
    ids: set[str] = set()
    linkedin_seen: set[str] = set()
    phones = rng.sample(range(10000), k=min(10000, sum(plan)))
    departments = list(_DEPARTMENTS)
    for company, n in zip(companies, plan, strict=True):
        names_here: set[tuple[str, str]] = set()
        for k in range(n):
            while True:
                first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
                if (first, last) not in names_here:
                    names_here.add((first, last))
                    break
            if k == 0 and n >= 3:
                department, seniority, title = "Executive", "CEO", "Chief Executive Officer"
            else:
                department = rng.choices(departments, weights=_DEPARTMENT_WEIGHTS)[0]
                seniority, _, fmt = rng.choices(_SENIORITIES, weights=[s[1] for s in _SENIORITIES])[0]
                area, ic, cxo = _DEPARTMENTS[department]
                title = fmt.format(area=area, ic=ic, cxo=cxo)
            while True:
                linkedin = f"https://www.linkedin.com/in/{_slug(first)}-{_slug(last)}-{rng.randint(100, 999999)}/"
                if linkedin not in linkedin_seen:
                    linkedin_seen.add(linkedin)
                    break
            email = f"{_local_part(first)}.{_local_part(last)}@{company.domain}"
            if company.catch_all:
                verdict = VERDICT_CATCH_ALL
            elif rng.random() < 0.05:
                verdict = VERDICT_UNDELIVERABLE
            else:
                verdict = VERDICT_DELIVERABLE
            phone = phones[len(people) % len(phones)]
            people.append(
                Person(
                    person_id=_unique_hex(rng, "p_", 8, ids),
                    first_name=first,
                    last_name=last,
                    title=title,
                    department=department,
                    seniority=seniority,
                    linkedin_url=linkedin,
                    email=email,
                    email_verdict=verdict,
                    mobile_phone=f"+1415555{phone:04d}",
                    organisation_id=company.organisation_id,
                    known=rng.random() >= 0.08,
                )
            )
    return people


@functools.lru_cache(maxsize=8)
def build_dataset(seed: int = DEFAULT_SEED) -> Dataset:
    """500 companies and at least 5,000 people, identical for the same seed."""
    rng = random.Random(seed)
    companies = _build_companies(rng, 500)
    people = _build_people(rng, companies, 5000)
    return Dataset(seed, companies, people)


# -- demo contacts ---------------------------------------------------------

# (case label, share of the demo contacts)
DEMO_MIX = [
    ("known", 0.60),             # known person, correct Email
    ("known_no_email", 0.15),    # known person, Email missing
    ("known_wrong_email", 0.10), # known person, typo in the Email local part
    ("catch_all", 0.05),         # known person at a catch-all company
    ("unknown", 0.10),           # person Clodura has never heard of
]


def _mix_counts(n: int) -> list[int]:
    counts = [int(n * share) for _, share in DEMO_MIX]
    # Hand out the remainder by largest fractional part (stable order).
    rest = sorted(range(len(DEMO_MIX)), key=lambda i: -(n * DEMO_MIX[i][1] - counts[i]))
    for i in rest[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _typo(rng: random.Random, local: str) -> str:
    """A plausible typo in an address's local part (never a no-op)."""
    first, _, last = local.partition(".")
    for _ in range(20):
        kind = rng.randrange(3)
        use_last = bool(last) and rng.random() < 0.6
        target = last if use_last else first
        if len(target) < 2:
            kind = 2
        i = rng.randrange(len(target))
        if kind == 0 and i + 1 < len(target) and target[i] != target[i + 1]:
            changed = target[:i] + target[i + 1] + target[i] + target[i + 2:]  # swap
        elif kind == 1:
            changed = target[:i] + target[i + 1:]  # drop a letter
        else:
            changed = target[: i + 1] + target[i] + target[i + 1:]  # double a letter
        if changed and changed != target:
            if use_last:
                return f"{first}.{changed}"
            return f"{changed}.{last}" if last else changed
    return local + "x"


def _demo_contacts(ds: Dataset, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    companies = {c.organisation_id: c for c in ds.companies}
    pools = {
        "known": [p for p in ds.people if p.known and p.email_verdict == VERDICT_DELIVERABLE],
        "known_no_email": [p for p in ds.people if p.known and not companies[p.organisation_id].catch_all],
        "known_wrong_email": [p for p in ds.people if p.known and not companies[p.organisation_id].catch_all],
        "catch_all": [p for p in ds.people if p.known and companies[p.organisation_id].catch_all],
        "unknown": [p for p in ds.people if not p.known],
    }
    used: set[str] = set()
    contacts: list[dict] = []
    for (case, _), count in zip(DEMO_MIX, _mix_counts(n), strict=True):
        pool = [p for p in pools[case] if p.person_id not in used]
        if count > len(pool):
            raise ValueError(f"demo_contacts: not enough people for case {case!r} (n={n})")
        for p in rng.sample(pool, count):
            used.add(p.person_id)
            company = companies[p.organisation_id]
            contact: dict = {"FirstName": p.first_name, "LastName": p.last_name}
            if case == "known_wrong_email":
                local, _, domain = p.email.partition("@")
                wrong = f"{_typo(rng, local)}@{domain}"
                while ds.verdict_for_email(wrong) != VERDICT_UNDELIVERABLE or wrong == p.email:
                    wrong = f"{_typo(rng, wrong.partition('@')[0])}@{domain}"
                contact["Email"] = wrong
            elif case != "known_no_email":
                contact["Email"] = p.email
            contact["_company"] = company.name
            contact["_domain"] = company.domain
            contact["_case"] = case
            contact["_person_id"] = p.person_id
            contacts.append(contact)
    rng.shuffle(contacts)
    return contacts


def demo_contacts(n: int, seed: int = 7, dataset: Dataset | None = None) -> list[dict]:
    """Salesforce Contact field dicts for the demo (deterministic for `seed`).

    Mix (see DEMO_MIX): ~60% known people with their correct Email, ~15% known
    people without Email, ~10% known people with a typo'd Email (verifies
    Undeliverable), ~5% known people at catch-all companies, ~10% people
    unknown to Clodura.  Keys starting with "_" are metadata for the caller:
    `_company`, `_domain`, `_case` (the mix bucket) and `_person_id`.
    Title/Department are never set: enrichment fills them."""
    return _demo_contacts(dataset or build_dataset(), n, seed)
