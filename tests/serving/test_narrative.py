from models.teeth import NumberingSystem, Tooth
from serving.narrative import Signal, parse_narrative

U, F = NumberingSystem.UNIVERSAL, NumberingSystem.FDI


def test_negation_turns_a_cue_off() -> None:
    signals = parse_narrative("Extraction of #17, no bone removal, not sectioned.")
    statement = signals.state(Signal.SURGICAL_STEPS, Tooth.from_universal(17), U)
    assert statement is not None and statement.negated


def test_a_positive_cue_beats_a_negated_one_in_the_same_sentence() -> None:
    signals = parse_narrative("No flap, but sectioned #2 to deliver the roots.")
    statement = signals.state(Signal.SURGICAL_STEPS, Tooth.from_universal(2), U)
    assert statement is not None and not statement.negated and statement.phrase == "sectioned"


def test_statements_are_tied_to_the_teeth_of_their_sentence() -> None:
    signals = parse_narrative("Raised a full-thickness flap on tooth 32. Tooth 30 irreversible pulpitis.")
    assert signals.state(Signal.SURGICAL_STEPS, Tooth.from_universal(32), U) is not None
    assert signals.state(Signal.SURGICAL_STEPS, Tooth.from_universal(30), U) is None
    assert signals.state(Signal.PULP_INVOLVEMENT, Tooth.from_universal(30), U) is not None


def test_several_teeth_in_one_sentence() -> None:
    signals = parse_narrative("Teeth 3 and 14 fractured cusps.")
    for number in ("3", "14"):
        assert signals.state(Signal.FRACTURE, Tooth.from_universal(number), U) is not None
    assert signals.state(Signal.FRACTURE, Tooth.from_universal(15), U) is None


def test_a_sentence_without_a_tooth_applies_to_every_line() -> None:
    signals = parse_narrative("Bony impaction, distoangular.")
    assert signals.state(Signal.IMPACTION, Tooth.fdi_of(38), F) is not None


def test_fdi_mentions_read_with_the_lines_system() -> None:
    signals = parse_narrative("#46 retreatment of failed root canal")
    assert signals.state(Signal.RETREATMENT, Tooth.fdi_of(46), F) is not None
    assert signals.state(Signal.RETREATMENT, Tooth.fdi_of(36), F) is None


def test_canal_counts_from_numbers_and_canal_names() -> None:
    assert parse_narrative("#19 three canals obturated").canal_count(Tooth.from_universal(19), U) == 3
    assert parse_narrative("#19 MB, DB and palatal canal filled").canal_count(Tooth.from_universal(19), U) == 3
    single = parse_narrative("single canal, #8")
    assert single.canal_count(Tooth.from_universal(8), U) == 1
    assert single.state(Signal.CANALS_MULTIPLE, Tooth.from_universal(8), U).negated


def test_empty_narrative_states_nothing() -> None:
    assert parse_narrative("").statements == ()
    assert parse_narrative("   ").state(Signal.IMPACTION, None, U) is None
