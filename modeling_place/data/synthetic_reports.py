"""MIMIC-style radiology reports for the synthetic chest radiographs.

A report has a ``FINDINGS:`` and an ``IMPRESSION:`` section and sometimes ``INDICATION:``, ``COMPARISON:``
and ``TECHNIQUE:`` sections (which may name findings that are NOT present, e.g. "rule out pneumothorax", so a
pipeline has to skip them). Each present finding gets one sentence from at least six paraphrases (plus hedged
variants for subtle instances) naming its attributes; some absent findings are negated; normal-anatomy
sentences come from small pools, so the same sentence recurs across many reports. The impression summarises
with shorter phrasing.

Invariant (tested): within FINDINGS and IMPRESSION, a sentence matching ``MENTION_PATTERNS[f]`` without a
``NEGATION_PATTERN`` cue exists exactly when finding ``f`` is present; "No Finding" phrases
(``NO_FINDING_PATTERN``) appear exactly when no pathology is present.
"""
from __future__ import annotations

import re

import numpy as np

MENTION_PATTERNS: dict[str, str] = {
    "Cardiomegaly": r"cardiomegaly|enlarge",
    "Pleural Effusion": r"effusion|fluid",
    "Pneumothorax": r"pneumothora|\bptx\b",
    "Consolidation": r"consolidat|airspace",
    "Lung Lesion": r"nodul|\bmass\b|lesion",
    "Atelectasis": r"atelecta",
    "Edema": r"edema|congestion",
    "Support Devices": r"tube|\bett\b|catheter|central line|picc|pacemaker|pacer|device",
    "Fracture": r"fracture",
}
NEGATION_PATTERN = r"\b(?:no|not|without|negative for|free of)\b"
NO_FINDING_PATTERN = r"no acute cardiopulmonary|no acute intrathoracic|normal chest radiograph"

_POSITIVE: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": (
        "the heart is {sevly} enlarged.", "there is {sev} cardiomegaly.",
        "{sev} enlargement of the cardiac silhouette.", "the cardiac silhouette is {sevly} enlarged.",
        "{sev} cardiomegaly is present.", "heart size is {sevly} enlarged.",
        "{sev} cardiomegaly, similar to prior.", "enlarged cardiac silhouette, {sev} in degree.",
    ),
    "Pleural Effusion": (
        "there {be} {a}{size} {side} pleural {noun}.", "{size} {side} pleural {noun} {be} present.",
        "{a}{size} amount of {side} pleural fluid is noted.",
        "blunting of the {side} costophrenic {angle} consistent with {a}{size} pleural {noun}.",
        "{size} {side} pleural {noun} with a meniscus.", "{side} pleural {noun}, {size} in size.",
        "layering {side} pleural fluid, {size} in amount.",
    ),
    "Pneumothorax": (
        "there is a {size} {side} pneumothorax.", "{size} {side} apical pneumothorax.",
        "a {side} pneumothorax is present, {size} in size.", "{side} PTX, {size}.",
        "a {side} pleural line is visible with absent lung markings peripherally, consistent with a {size} "
        "pneumothorax.",
        "{size} {side}-sided pneumothorax is noted.", "interval development of a {size} {side} pneumothorax.",
    ),
    "Consolidation": (
        "there is {patchy} consolidation in the {region}.", "{patchy} {region} consolidation.",
        "focal airspace opacity in the {region}, concerning for pneumonia.",
        "airspace consolidation is seen in the {region}.", "{region} consolidation with air bronchograms.",
        "there is a {size} area of consolidation in the {side} {zone} zone.",
        "{size} {side} {zone} zone airspace consolidation.",
    ),
    "Lung Lesion": (
        "there is a {diam} {kind} in the {region}.", "a {kind} measuring {diam} is seen in the {side} {zone} zone.",
        "{diam} {region} {kind}.", "rounded {density} {kind} projecting over the {side} {zone} lung, measuring {diam}.",
        "a {side} {zone} zone {kind} is noted, approximately {diam} in diameter.",
        "{density} {diam} {kind} in the {region}; recommend CT for further evaluation.",
        "well-circumscribed {diam} {kind} in the {side} {zone} zone.",
    ),
    "Atelectasis": (
        "{kind} atelectasis in the {loc}.", "linear opacity in the {loc} likely reflects atelectasis.",
        "{side} {basilar} atelectasis.", "minor {kind} atelectasis in the {loc}.",
        "atelectatic changes are seen in the {loc}.", "there is {kind} atelectasis at the {loc}.",
    ),
    "Edema": (
        "{sev} pulmonary edema.", "there is {sev} interstitial pulmonary edema.",
        "findings are consistent with {sev} pulmonary edema.",
        "{sev} perihilar haziness and vascular indistinctness compatible with edema.",
        "pulmonary vascular congestion with {sev} interstitial edema.",
        "{sev} bilateral perihilar opacities consistent with pulmonary edema.",
        "{sev} pulmonary edema, slightly worse than prior.",
    ),
    "Fracture": (
        "nondisplaced fracture of the {side} {ord} rib.", "there is a {side} {ord} posterior rib fracture.",
        "acute-appearing fracture of the {side} {ord} rib.",
        "subtle cortical break of the {side} {ord} rib consistent with fracture.",
        "{side} {ord} rib fracture is noted.", "a fracture of the {ord} {side} rib is seen.",
        "minimally displaced {side} {ord} rib fracture.",
    ),
    "endotracheal tube": (
        "endotracheal tube terminates {cm} cm above the carina.",
        "the endotracheal tube tip is {cm} cm above the carina.",
        "ET tube in standard position, {cm} cm above the carina.",
        "an endotracheal tube is in place with the tip {cm} cm from the carina.",
        "endotracheal tube in appropriate position.", "ETT tip projects {cm} cm above the carina.",
    ),
    "central line": (
        "{side} internal jugular central venous catheter terminates in the mid SVC.",
        "{side} subclavian central line with tip at the cavoatrial junction.",
        "a {side}-sided PICC ends in the lower SVC.", "central venous catheter tip projects over the SVC.",
        "{side} central line in unchanged position.",
        "interval placement of a {side} central venous catheter, tip in the SVC.",
    ),
    "pacemaker": (
        "{side}-sided pacemaker with leads in the right atrium and right ventricle.",
        "dual-chamber pacemaker device in place.",
        "pacer generator overlies the {side} chest wall; leads terminate in expected positions.",
        "cardiac pacemaker is unchanged in position.", "a {side}-sided pacemaker is present.",
        "{side} chest wall pacemaker with transvenous leads.",
    ),
}
_HEDGED: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("the cardiac silhouette is borderline enlarged.", "possible mild cardiomegaly.",
                     "heart size is upper normal to mildly enlarged."),
    "Pleural Effusion": ("minimal blunting of the {side} costophrenic {angle} may reflect a trace of pleural fluid.",
                         "a small {side} pleural {noun} cannot be excluded.", "possible trace {side} pleural {noun}."),
    "Pneumothorax": ("possible tiny {side} apical pneumothorax.",
                     "a small {side} apical pneumothorax cannot be excluded.",
                     "subtle {side} apical pleural line may represent a small pneumothorax."),
    "Consolidation": ("subtle opacity in the {region} may represent early consolidation.",
                      "ill-defined {side} {zone} zone airspace opacity; infection cannot be excluded.",
                      "hazy {region} opacity could reflect developing consolidation."),
    "Lung Lesion": ("possible faint {diam} nodular opacity in the {side} {zone} zone.",
                    "a faint {side} {zone} zone nodule may represent a nipple shadow; repeat with nipple markers.",
                    "questionable {diam} nodule in the {region}."),
    "Atelectasis": ("streaky {loc} opacity, likely minor atelectasis.", "mild {loc} opacity may represent atelectasis."),
    "Edema": ("mild pulmonary vascular congestion, possibly early edema.",
              "subtle perihilar haziness may represent mild edema."),
    "Fracture": ("possible nondisplaced {side} {ord} rib fracture.",
                 "cortical irregularity of the {side} {ord} rib may represent a fracture."),
}
_IMPRESSION: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("{sev} cardiomegaly.", "cardiomegaly.", "enlarged heart."),
    "Pleural Effusion": ("{size} {side} pleural {noun}.", "{side} pleural {noun}.", "{size} {side} {noun}."),
    "Pneumothorax": ("{size} {side} pneumothorax.", "{side} PTX.", "{side} pneumothorax, {size}."),
    "Consolidation": ("{region} consolidation, concerning for pneumonia.", "focal {region} consolidation.",
                      "{side} {zone} zone airspace consolidation."),
    "Lung Lesion": ("{region} {kind}.", "{diam} {side} {zone} zone {kind}; CT recommended.", "{side} lung {kind}."),
    "Atelectasis": ("{side} {basilar} atelectasis.", "minor atelectasis in the {loc}.", "{kind} atelectasis."),
    "Edema": ("{sev} pulmonary edema.", "{sev} congestive failure with pulmonary edema.", "pulmonary edema."),
    "Fracture": ("{side} {ord} rib fracture.", "{side} rib fracture."),
    "endotracheal tube": ("endotracheal tube in standard position.", "ETT in appropriate position."),
    "central line": ("central line in appropriate position.", "{side} central venous catheter, tip in the SVC."),
    "pacemaker": ("pacemaker in place.", "{side}-sided pacemaker."),
}
_NEGATED: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("no cardiomegaly.", "the heart is not enlarged."),
    "Pleural Effusion": ("no pleural effusion.", "no pleural fluid is seen.", "there is no pleural effusion."),
    "Pneumothorax": ("no pneumothorax.", "no PTX.", "there is no pneumothorax."),
    "Consolidation": ("no focal consolidation.", "there is no consolidation.", "no airspace consolidation."),
    "Lung Lesion": ("no pulmonary nodules or masses.", "no focal lung lesion.", "no suspicious pulmonary nodule."),
    "Atelectasis": ("no atelectasis.", "no focal atelectasis."),
    "Edema": ("no pulmonary edema.", "no pulmonary vascular congestion.", "no edema."),
    "Support Devices": ("no lines or tubes.", "no support devices are seen."),
    "Fracture": ("no displaced rib fractures.", "no acute fracture.", "no fracture is identified."),
}
# Combined negations, used only when every finding they name is absent.
_NEGATED_GROUPS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("Pleural Effusion", "Pneumothorax"), "no pleural effusion or pneumothorax."),
    (("Consolidation", "Pleural Effusion", "Pneumothorax"), "no focal consolidation, pleural effusion, or pneumothorax."),
    (("Edema", "Pleural Effusion"), "no pulmonary edema or pleural effusion."),
)
_LUNG_FINDINGS = frozenset({"Consolidation", "Lung Lesion", "Atelectasis", "Edema", "Pneumothorax"})
# (topic order, sentences, findings that must be absent for the sentence to be true)
_NORMAL: tuple[tuple[int, tuple[str, ...], frozenset], ...] = (
    (2, ("the lungs are clear.", "the lungs are well expanded and clear.", "lungs are clear bilaterally."),
     _LUNG_FINDINGS),
    (3, ("the costophrenic angles are sharp.",), frozenset({"Pleural Effusion"})),
    (4, ("heart size is normal.", "the cardiac silhouette is within normal limits.", "normal heart size."),
     frozenset({"Cardiomegaly"})),
    (4, ("the mediastinal and hilar contours are normal.", "the hilar contours are unremarkable.",
         "the trachea is midline."), frozenset()),
    (4, ("the pulmonary vasculature is normal.",), frozenset({"Edema"})),
    (5, ("osseous structures are intact.", "no acute osseous abnormality.", "the bones are unremarkable."),
     frozenset({"Fracture"})),
    (6, ("the visualized upper abdomen is unremarkable.",), frozenset()),
)
_VOLUMES = {"low": ("low lung volumes.", "lung volumes are low with bronchovascular crowding."),
            "normal": ("lung volumes are normal.",), "high": ("the lungs are hyperinflated.",)}
_NO_FINDING_IMPRESSION = ("no acute cardiopulmonary process.", "no acute intrathoracic abnormality.",
                          "no acute cardiopulmonary abnormality.")
_INDICATIONS = ("shortness of breath.", "cough and fever.", "chest pain.", "fever, evaluate for pneumonia.",
                "dyspnea, rule out pneumothorax.", "new line, assess placement.", "hypoxia.",
                "fall, evaluate for rib fractures.", "planned surgery, pre-operative evaluation.",
                "heart failure, assess for edema.")
_COMPARISONS = ("___.", "None.", "Chest radiograph from ___.", "Prior study of ___.")
_TOPIC = {"Support Devices": 0, "Consolidation": 2, "Lung Lesion": 2, "Atelectasis": 2, "Edema": 2,
          "Pleural Effusion": 3, "Pneumothorax": 3, "Cardiomegaly": 4, "Fracture": 5}
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
             "eleventh", "twelfth")


def _region(side: str, zone: str) -> str:
    """Lobar name of a lung zone ("right middle lobe", "lingula", ...)."""
    if zone == "middle":
        return "right middle lobe" if side == "right" else "lingula"
    return f"{side} {zone} lobe"


def finding_words(name: str, attributes: dict, rng: np.random.Generator) -> dict[str, str]:
    """Template words for one finding's attributes (paraphrase choices included)."""
    words = {key: str(value) for key, value in attributes.items()}
    side, zone = attributes.get("side", ""), attributes.get("zone", "")
    if zone:
        words["region"] = _region(side, zone)
        words["loc"] = f"{side} lung base" if zone == "lower" else f"{side} {zone} zone"
        words["basilar"] = "basilar" if zone == "lower" else f"{zone} zone"
    if "severity" in attributes:
        words["sev"] = attributes["severity"]
        words["sevly"] = attributes["severity"] + "ly"
    if name == "Pleural Effusion":
        plural = side == "bilateral"
        words.update(noun="effusions" if plural else "effusion", a="" if plural else "a ",
                     be="are" if plural else "is", angle="angles" if plural else "angle")
    if name == "Consolidation":
        words["patchy"] = "patchy" if attributes["size"] == "small" else str(rng.choice(["extensive", "dense"]))
    if name == "Lung Lesion":
        mm = int(attributes["diameter_mm"])
        words["diam"] = f"{mm} mm" if attributes["kind"] == "nodule" else f"{mm / 10:.1f} cm"
    if name == "Atelectasis":
        words["kind"] = str(rng.choice(["plate-like", "linear", "subsegmental", "discoid"]))
    if name == "Fracture":
        words["ord"] = _ORDINALS[int(attributes["rib"]) - 1]
    if "tip_cm_above_carina" in attributes:
        words["cm"] = str(attributes["tip_cm_above_carina"])
    return words


def _capitalise(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


def _pick(rng: np.random.Generator, options: tuple[str, ...], words: dict[str, str]) -> str:
    return _capitalise(options[int(rng.integers(len(options)))].format(**words))


def _template_key(record: dict) -> str:
    return record["attributes"]["device"] if record["name"] == "Support Devices" else record["name"]


def _positive_sentences(records: list[dict], rng: np.random.Generator) -> list[dict]:
    """One FINDINGS sentence per finding instance (hedged for most subtle instances)."""
    sentences = []
    for index, record in enumerate(records):
        key, words = _template_key(record), finding_words(record["name"], record["attributes"], rng)
        hedge = record["attributes"].get("subtle") and key in _HEDGED and rng.random() < 0.6
        text = _pick(rng, _HEDGED[key] if hedge else _POSITIVE[key], words)
        sentences.append({"text": text, "finding": record["name"], "polarity": "hedged" if hedge else "positive",
                          "topic": _TOPIC[record["name"]], "words": words, "key": key, "instance": index})
    return sentences


def _negative_sentences(absent: set[str], rng: np.random.Generator) -> list[dict]:
    """Negations of some absent findings, combined phrasings preferred when they apply."""
    sentences, negated = [], set()
    for group, text in _NEGATED_GROUPS:
        if set(group) <= absent - negated and rng.random() < 0.45:
            sentences.append({"text": _capitalise(text), "finding": group[0], "polarity": "negative",
                              "topic": _TOPIC[group[-1]]})
            negated |= set(group)
    for name in sorted(absent - negated):
        if rng.random() < (0.08 if name == "Support Devices" else 0.3):
            sentences.append({"text": _pick(rng, _NEGATED[name], {}), "finding": name, "polarity": "negative",
                              "topic": _TOPIC[name]})
    return sentences


def _normal_sentences(present: set[str], inspiration: str, rng: np.random.Generator) -> list[dict]:
    """Normal-anatomy sentences from small shared pools (only those true for this patient)."""
    sentences = []
    if rng.random() < 0.4:
        sentences.append({"text": _pick(rng, _VOLUMES[inspiration], {}), "finding": None, "polarity": "normal",
                          "topic": 1})
    for topic, options, requires_absent in _NORMAL:
        if not (requires_absent & present) and rng.random() < 0.55:
            sentences.append({"text": _pick(rng, options, {}), "finding": None, "polarity": "normal", "topic": topic})
    return sentences


def _impression(positives: list[dict], rng: np.random.Generator) -> list[str]:
    """Summary: shorter phrasing of the pathologies (subtle ones as "possible ..."), devices sometimes."""
    lines = []
    for sentence in positives:
        is_device = sentence["finding"] == "Support Devices"
        if is_device and rng.random() < 0.5:
            continue
        text = _pick(rng, _IMPRESSION[sentence["key"]], sentence["words"])
        if sentence["polarity"] == "hedged":
            text = "Possible " + text[0].lower() + text[1:]
        lines.append(text)
    if not any(s["finding"] != "Support Devices" for s in positives):
        lines.append(_pick(rng, _NO_FINDING_IMPRESSION, {}))
    if len(lines) > 1 and rng.random() < 0.4:
        return [f"{i}. {line}" for i, line in enumerate(lines, 1)]
    return lines


def _header_sections(projection: str, rng: np.random.Generator) -> list[str]:
    """Optional INDICATION / COMPARISON / TECHNIQUE sections (which a pipeline must skip)."""
    sections = []
    if rng.random() < 0.6:
        age, sex = int(rng.integers(20, 95)), str(rng.choice(["man", "woman"]))
        sections.append(f"INDICATION: {age}-year-old {sex} with {_pick(rng, _INDICATIONS, {}).lower()}")
    if rng.random() < 0.5:
        sections.append(f"COMPARISON: {_pick(rng, _COMPARISONS, {})}")
    if rng.random() < 0.35:
        technique = "PA and lateral views of the chest." if projection == "PA" else "Portable AP chest radiograph."
        sections.append(f"TECHNIQUE: {technique}")
    return sections


def write_report(records: list[dict], inspiration: str, projection: str,
                 rng: np.random.Generator) -> tuple[str, list[dict]]:
    """Write the report for a case's finding records.

    Returns the report text and the FINDINGS/IMPRESSION sentence records (``text``, ``section``, ``finding``,
    ``polarity`` in {"positive", "hedged", "negative", "normal", "summary"} and ``instance``, the index of the
    finding record a positive sentence describes).
    """
    present = {record["name"] for record in records}
    absent = set(MENTION_PATTERNS) - present
    positives = _positive_sentences(records, rng)
    body = positives + _negative_sentences(absent, rng) + _normal_sentences(present, inspiration, rng)
    order = np.argsort([s["topic"] + rng.random() * 0.9 for s in body], kind="stable")
    findings = [body[i] for i in order]
    impression = _impression(positives, rng)
    sections = _header_sections(projection, rng)
    sections.append("FINDINGS: " + " ".join(s["text"] for s in findings))
    sections.append("IMPRESSION: " + " ".join(impression))
    sentences = [{"text": s["text"], "section": "findings", "finding": s["finding"], "polarity": s["polarity"],
                  "instance": s.get("instance")} for s in findings]
    sentences += [{"text": text, "section": "impression", "finding": None, "polarity": "summary", "instance": None}
                  for text in impression]
    return "\n\n".join(sections), sentences


def report_sections(report: str) -> dict[str, str]:
    """Split a report into its upper-case ``NAME:`` sections (lower-case keys)."""
    parts = re.split(r"(?m)^([A-Z][A-Z ]+):", report)
    return {parts[i].strip().lower(): parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
