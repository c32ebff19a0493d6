"""Synthetic five-tier networks (``telenet network generate``) for tests, simulation and capacity planning.

:func:`generate_network` is a pure, deterministic function of its parameters and seed: the same call
gives the same document, byte for byte once serialized. The document follows
``schemas/network.schema.json`` and the conventions of the hand-made demo (``fixtures/network-demo.json``):

- codes ``{P}-C01`` (city), ``{P}-C01-K01`` (county), ``{P}-C01-K01-T01`` (township),
  ``{P}-C01-K01-T01-V01`` (village) under the province ``{P}-PROV``; three digits once a level has
  more than 99 units;
- DICOM AE titles are the code without the prefix and the dashes (``C01K01T01``; ``{P}PROV`` for the
  province), at most 16 characters; the HL7 facility (MSH-4) is the code;
- centers: imaging + ECG in every county, imaging + ECG + consultation in every city and at the
  province;
- networks: one province 协作网 with every institution as member, a city 医联体 per city, a county
  医共体 per county, each with one agreement per member;
- the fee schedule of the demo (illustrative prices, not a tariff) and SLA defaults from
  :mod:`telenet.domain.sla`;
- accounts: a reader per center and a coordinator per center-hosting institution, a requester and an
  integration (HIS) account per township, an integration account per county, an admin per county,
  city and province. Passwords are never in the file.

Every name is invented from syllable tables; any likeness to a real place or person is chance.
Note that AE titles omit the prefix, so a generated network and the demo (or two generated networks)
must be loaded into different databases.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from telenet.domain.sla import DEFAULT_SLA_MINUTES

FORMAT = "telenet-network/1"
MAX_PER_LEVEL = 999
PROVINCE_SCALE: Mapping[str, int] = {
    "cities": 10,
    "counties_per_city": 10,
    "townships_per_county": 10,
    "villages_per_township": 10,
}

AGREEMENT_FROM = "2025-01-01"
AGREEMENT_TO = "2028-12-31"
ALL_SERVICES = ["imaging", "ecg", "consultation"]
# Splits as in the demo: the invited (answering) side's share in basis points.
PROVINCE_SHARE_BP = 6000
CITY_SHARE_BP = 5000
COUNTY_SHARE_BP = 7000

# --- syllable tables -------------------------------------------------------------------------------

PLACE_FIRST = (
    "安白宝碧丰凤福高广桂海和河红华怀黄江金锦景靖兰蓝乐黎莲临灵龙罗梅明南宁平青清庆瑞沙山石双顺松泰桃天通桐"
    "万文西溪仙祥新兴秀阳永玉元云长竹紫岚檀梧禾"
)
PLACE_SECOND = "安坝滨昌川丰峰阜冈港和河湖江口岭林陵隆宁平坪浦桥泉山水台潭塘田亭湾溪阳源岩园州洲庄乐门城沟"
VILLAGE_SECOND = "坪坑湾寨塘口岭坳冲田岗园山溪桥垌坝屯堡洞湖"
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈姚卢"
    "姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建文辉力宁鹏斌宇浩凯晨欣雪琳立海志国振晓婷颖俊峰慧"
    "雨梅思嘉博昊"
)
READER_TITLES = ("主治医师", "副主任医师", "主任医师")

# --- centers ---------------------------------------------------------------------------------------

COUNTY_IMAGING_MODALITIES = ["DX", "CR", "CT", "US"]
CITY_IMAGING_MODALITIES = ["DX", "CR", "CT", "MR", "US", "MG"]
PROVINCE_IMAGING_MODALITIES = ["DX", "CR", "CT", "MR", "US", "MG", "XA", "NM"]
CITY_IMAGING_SUBSPECIALTIES = ["neuro", "chest", "msk"]
PROVINCE_IMAGING_SUBSPECIALTIES = ["neuro", "chest", "msk", "cardiac", "abdominal", "breast", "pediatric"]
CITY_CONSULTATION_SUBSPECIALTIES = ["cardiology", "neurology", "oncology", "pediatrics"]
PROVINCE_CONSULTATION_SUBSPECIALTIES = [
    "cardiology",
    "neurology",
    "oncology",
    "pediatrics",
    "respiratory",
    "gastroenterology",
    "endocrinology",
    "nephrology",
    "obstetrics",
    "general_surgery",
    "orthopedics",
    "infectious_disease",
    "critical_care",
    "mdt",
]
SLA_NOTES = {
    "imaging": "SLA: 急诊X线30分钟、急诊CT/MR 60分钟、常规CT/MR 4小时 (a published hospital report time limit, "
    "used as configurable default; see telenet/domain/sla.py)",
    "ecg": "SLA: 远程心电约10分钟 (the turnaround remote ECG services advertise, used as configurable default; "
    "see telenet/domain/sla.py)",
    "consultation": "SLA: 急会诊24小时内 (urgent consultation within 24 h, per the policy facts; stat and routine "
    "are configurable defaults; see telenet/domain/sla.py)",
}
SERVICE_NAMES = {"imaging": "远程影像诊断中心", "ecg": "远程心电诊断中心", "consultation": "远程会诊中心"}
SERVICE_SUFFIX = {"imaging": "IMG", "ecg": "ECG", "consultation": "CONS"}
STROKE_RULE_REASON = "卒中绿色通道: STAT head CT straight to the city stroke center"

# --- fee schedule ------------------------------------------------------------------------------------

# Illustrative prices in fen, the same as the demo's: modelled on published provincial price lists for
# remote reads and consultations, not copied from any, and not a real tariff. Stat adds 30 %.
FEE_SOURCE = (
    "示意价格 (illustrative): modelled on published provincial 远程会诊/远程影像诊断 price lists, "
    "not copied from any; not a real tariff"
)
IMAGING_PRICES_FEN = {"DX": 3000, "CR": 3000, "CT": 8000, "MR": 12000, "US": 5000, "MG": 6000, "XA": 15000, "NM": 15000}
ECG_PRICE_FEN = 1500
CONSULTATION_PRICE_FEN = 20000
MDT_CONSULTATION_PRICE_FEN = 50000
STAT_SURCHARGE_PERCENT = 30
FEES_FROM = "2025-01-01"


def generate_network(
    *,
    cities: int,
    counties_per_city: int,
    townships_per_county: int,
    villages_per_township: int,
    seed: int,
    prefix: str = "GP",
    hl7_destination: tuple[str, int] | None = None,
    hl7_distinct_ports: bool = False,
) -> dict[str, Any]:
    """A whole network document for a province of the given shape.

    ``hl7_destination`` (host, port) is where ORU^R01 results for every county and township are sent;
    with ``hl7_distinct_ports`` each of them gets its own port, counting up from ``port`` in file order
    (the demo's convention, for simulators that run one listener per HIS).
    """
    counts = {
        "cities": cities,
        "counties_per_city": counties_per_city,
        "townships_per_county": townships_per_county,
        "villages_per_township": villages_per_township,
    }
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PER_LEVEL:
            raise ValueError(f"{name} must be an integer 0..{MAX_PER_LEVEL}, got {value!r}")
    if not (2 <= len(prefix) <= 4 and prefix.isascii() and prefix.isalpha() and prefix.isupper()):
        raise ValueError(f"prefix must be 2-4 upper-case letters A-Z, got {prefix!r}")
    return _Generator(random.Random(seed), prefix, counts, hl7_destination, hl7_distinct_ports).document(seed)


def _width(count: int) -> int:
    return max(2, len(str(count)))


class _Generator:
    """Builds the document top-down in one pass; only ``self.rng`` decides names and grades."""

    def __init__(
        self,
        rng: random.Random,
        prefix: str,
        counts: Mapping[str, int],
        hl7_destination: tuple[str, int] | None,
        hl7_distinct_ports: bool,
    ) -> None:
        self.rng = rng
        self.prefix = prefix
        self.counts = counts
        self.hl7_destination = hl7_destination
        self.hl7_distinct_ports = hl7_distinct_ports
        self.hl7_next_port = hl7_destination[1] if hl7_destination else 0
        self.institutions: list[dict[str, Any]] = []
        self.centers: list[dict[str, Any]] = []
        self.users: list[dict[str, Any]] = []
        self.networks: list[dict[str, Any]] = []

    # -- names ---------------------------------------------------------------------------------------

    def place(self, used: set[str], second: str = PLACE_SECOND) -> str:
        """A two-character place name not in ``used`` (a random pick; a counter suffix if all are taken)."""
        for _ in range(200):
            name = self.rng.choice(PLACE_FIRST) + self.rng.choice(second)
            if name[0] != name[1] and name not in used:
                used.add(name)
                return name
        base = self.rng.choice(PLACE_FIRST) + self.rng.choice(second)
        n = 2
        while f"{base}{n}" in used:
            n += 1
        used.add(f"{base}{n}")
        return f"{base}{n}"

    def person(self) -> str:
        given = "".join(self.rng.choice(GIVEN) for _ in range(self.rng.choice((1, 2, 2))))
        return self.rng.choice(SURNAMES) + given

    # -- building blocks ---------------------------------------------------------------------------

    def ae_title(self, code: str) -> str:
        if code == f"{self.prefix}-PROV":
            return f"{self.prefix}PROV"
        return code[len(self.prefix) + 1 :].replace("-", "")

    def institution(self, code: str, name: str, tier: str, parent: str | None, kind: str, grade: str) -> None:
        destination = None
        if self.hl7_destination and tier in ("county", "township"):
            if self.hl7_next_port > 65535:
                raise ValueError("too many institutions for distinct HL7 ports from the given port")
            destination = {"host": self.hl7_destination[0], "port": self.hl7_next_port}
            if self.hl7_distinct_ports:
                self.hl7_next_port += 1
        self.institutions.append(
            {
                "code": code,
                "name": name,
                "tier": tier,
                "parent": parent,
                "kind": kind,
                "grade": grade,
                "ae_titles": [self.ae_title(code)],
                "hl7_facility": code,
                "hl7_destination": destination,
            }
        )

    def center(self, institution: str, place: str, service: str, level: str) -> str:
        code = f"{institution}-{SERVICE_SUFFIX[service]}"
        modalities: list[str]
        subspecialties: list[str] = []
        if service == "imaging":
            modalities = {
                "county": COUNTY_IMAGING_MODALITIES,
                "city": CITY_IMAGING_MODALITIES,
                "province": PROVINCE_IMAGING_MODALITIES,
            }[level]
            subspecialties = {"county": [], "city": CITY_IMAGING_SUBSPECIALTIES}.get(
                level, PROVINCE_IMAGING_SUBSPECIALTIES
            )
        elif service == "ecg":
            modalities = ["ECG"]
            subspecialties = ["cardiology"] if level == "province" else []
        else:
            modalities = []
            subspecialties = (
                PROVINCE_CONSULTATION_SUBSPECIALTIES if level == "province" else CITY_CONSULTATION_SUBSPECIALTIES
            )
        capacity = {"county": 20 if service == "imaging" else 30, "city": 40, "province": 60}[level]
        if service == "consultation":
            capacity = {"city": 10, "province": 20}[level]
        opening_hours = None
        if service == "consultation" and level == "city":
            opening_hours = [
                {"days": "mon-fri", "from": "08:00", "to": "17:30"},
                {"days": "sat", "from": "08:00", "to": "12:00"},
            ]
        self.centers.append(
            {
                "code": code,
                "name": f"{place}{SERVICE_NAMES[service]}",
                "institution": institution,
                "service": service,
                "modalities": list(modalities),
                "subspecialties": list(subspecialties),
                "opening_hours": opening_hours,
                "sla_minutes": dict(DEFAULT_SLA_MINUTES[service]),
                "capacity": capacity,
                "dicom_node": None,
                "qc_failed": False,
                "note": SLA_NOTES[service],
            }
        )
        return code

    def user(
        self,
        username: str,
        display_name: str,
        role: str,
        institution: str,
        centers: list[str] | None = None,
        title: str | None = None,
        practice_since: str | None = None,
    ) -> None:
        self.users.append(
            {
                "username": username,
                "display_name": display_name,
                "role": role,
                "institution": institution,
                "centers": centers or [],
                "title": title,
                "practice_since": practice_since,
            }
        )

    def staff(self, institution: str, label: str, center_codes: list[str]) -> None:
        """A reader per center (all signing: ≥ 3 years of practice) and one coordinator for them all."""
        slug = institution[len(self.prefix) + 1 :].lower()
        for code in center_codes:
            year = self.rng.randint(1995, 2018)
            self.user(
                f"reader.{code[len(self.prefix) + 1 :].lower()}",
                self.person(),
                "reader",
                institution,
                [code],
                self.rng.choice(READER_TITLES),
                f"{year}-{self.rng.randint(1, 12):02d}-01",
            )
        self.user(f"coord.{slug}", self.person(), "coordinator", institution, list(center_codes))
        self.user(f"admin.{slug}", f"{label}管理员", "admin", institution)

    def network(
        self,
        lead: str,
        name: str,
        members: list[str],
        services: list[str],
        share_bp: int,
        rules: list[dict[str, Any]] | None = None,
    ) -> None:
        net: dict[str, Any] = {
            "code": f"NET-{lead}",
            "name": name,
            "lead": lead,
            "members": members,
            "agreements": [
                {
                    "member": m,
                    "valid_from": AGREEMENT_FROM,
                    "valid_to": AGREEMENT_TO,
                    "services": list(services),
                    "invited_share_bp": share_bp,
                }
                for m in members
            ],
        }
        if rules:
            net["rules"] = rules
        self.networks.append(net)

    # -- the tree ------------------------------------------------------------------------------------

    def document(self, seed: int) -> dict[str, Any]:
        p = self.prefix
        province_name = self.place(set()) + "省"
        prov = f"{p}-PROV"
        self.institution(prov, f"{province_name}人民医院", "province", None, "general", "3A")
        prov_centers = [self.center(prov, f"{province_name}人民医院", s, "province") for s in ALL_SERVICES]
        self.centers[-1]["name"] = f"{province_name}远程会诊中心"
        self.staff(prov, f"{province_name}远程医疗", prov_centers)
        everyone: list[str] = []
        cw = _width(self.counts["cities"])
        kw = _width(self.counts["counties_per_city"])
        tw = _width(self.counts["townships_per_county"])
        vw = _width(self.counts["villages_per_township"])
        city_names: set[str] = set()
        county_names: set[str] = set()
        for c in range(1, self.counts["cities"] + 1):
            city = f"{p}-C{c:0{cw}d}"
            city_name = self.place(city_names)
            self.institution(
                city, f"{city_name}市人民医院", "city", prov, "general", self.rng.choice(("3A", "3A", "3B"))
            )
            city_centers = [self.center(city, f"{city_name}市人民医院", s, "city") for s in ALL_SERVICES]
            self.centers[-1]["name"] = f"{city_name}市远程会诊中心"
            self.staff(city, f"{city_name}市医联体", city_centers)
            everyone.append(city)
            city_members: list[str] = []
            for k in range(1, self.counts["counties_per_city"] + 1):
                county = f"{city}-K{k:0{kw}d}"
                county_members = self.county(county, city, county_names, tw, vw)
                city_members += [county, *county_members]
            everyone += city_members
            stroke = {
                "kind": "imaging",
                "center": f"{city}-IMG",
                "modality": "CT",
                "body_part": "HEAD",
                "priority": "stat",
                "reason": STROKE_RULE_REASON,
            }
            self.network(city, f"{city_name}市医疗联合体", city_members, ALL_SERVICES, CITY_SHARE_BP, [stroke])
        # The province network comes first, as in the demo.
        self.network(prov, f"{province_name}远程医疗协作网", everyone, ALL_SERVICES, PROVINCE_SHARE_BP)
        self.networks.insert(0, self.networks.pop())
        shape = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.counts.items())
        return {
            "format": FORMAT,
            "description": (
                f"Synthetic five-tier network of {province_name}, a FICTIONAL province generated by "
                f"`telenet network generate` (seed {seed}; {shape}): every place, institution, person and "
                "price is invented; fees are illustrative, SLAs are the documented defaults."
            ),
            "institutions": self.institutions,
            "networks": self.networks,
            "centers": self.centers,
            "fee_schedule": fee_schedule(),
            "users": self.users,
        }

    def county(self, county: str, city: str, county_names: set[str], tw: int, vw: int) -> list[str]:
        """The county hospital, its townships and villages, centers, accounts and 医共体; returns its members."""
        name = self.place(county_names)
        grade = self.rng.choice(("2A", "2A", "2A", "2B", "3B"))
        self.institution(county, f"{name}县人民医院", "county", city, "general", grade)
        county_centers = [self.center(county, f"{name}县", s, "county") for s in ("imaging", "ecg")]
        self.staff(county, f"{name}县医共体", county_centers)
        self.user(f"his.{county[len(self.prefix) + 1 :].lower()}", f"{name}县人民医院HIS接口", "integration", county)
        members: list[str] = []
        township_names: set[str] = set()
        for t in range(1, self.counts["townships_per_county"] + 1):
            township = f"{county}-T{t:0{tw}d}"
            town = self.place(township_names) + self.rng.choice("镇镇镇乡乡")
            grade = self.rng.choice(("1A", "1A", "1B", "1C"))
            self.institution(township, f"{name}县{town}卫生院", "township", county, "township_health_center", grade)
            slug = township[len(self.prefix) + 1 :].lower()
            self.user(f"req.{slug}", self.person(), "requester", township, title="全科医师")
            self.user(f"his.{slug}", f"{town}卫生院HIS接口", "integration", township)
            members.append(township)
            village_names: set[str] = set()
            for v in range(1, self.counts["villages_per_township"] + 1):
                village = f"{township}-V{v:0{vw}d}"
                village_name = self.place(village_names, VILLAGE_SECOND)
                self.institution(
                    village, f"{name}县{town}{village_name}村卫生室", "village", township, "village_clinic", "unrated"
                )
                members.append(village)
        self.network(county, f"{name}县县域医共体", members, ["imaging", "ecg"], COUNTY_SHARE_BP)
        return members


def fee_schedule() -> list[dict[str, Any]]:
    """The illustrative fee schedule (the demo's): a base price per service / modality and a stat price."""

    def entry(service: str, modality: str | None, priority: str | None, sub: str | None, fen: int) -> dict[str, Any]:
        return {
            "service": service,
            "modality": modality,
            "priority": priority,
            "subspecialty": sub,
            "price_fen": fen,
            "effective_from": FEES_FROM,
            "effective_to": None,
            "source": FEE_SOURCE,
        }

    def stat(fen: int) -> int:
        return fen * (100 + STAT_SURCHARGE_PERCENT) // 100

    fees = [entry("imaging", m, None, None, fen) for m, fen in IMAGING_PRICES_FEN.items()]
    fees += [entry("imaging", m, "stat", None, stat(fen)) for m, fen in IMAGING_PRICES_FEN.items()]
    fees += [entry("ecg", "ECG", None, None, ECG_PRICE_FEN), entry("ecg", "ECG", "stat", None, stat(ECG_PRICE_FEN))]
    fees += [
        entry("consultation", None, None, None, CONSULTATION_PRICE_FEN),
        entry("consultation", None, "stat", None, stat(CONSULTATION_PRICE_FEN)),
        entry("consultation", None, None, "mdt", MDT_CONSULTATION_PRICE_FEN),
    ]
    # The exam price list (检查费): what a recognized result saves, as in the demo network.
    fees += [entry("exam", m, None, None, fen) for m, fen in EXAM_PRICES_FEN.items()]
    return fees


EXAM_PRICES_FEN = {"DX": 8000, "CR": 8000, "CT": 30000, "MR": 60000, "US": 12000, "ECG": 2500}
