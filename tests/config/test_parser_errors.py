from gen_research.config.parser_errors import condense_parser_error, signature_keys

KEYS = {"": ["model", "data", "trainer"], "model": ["beta", "latent_dim"], "trainer": ["max_epochs", "max_steps"]}


def keys_of(section):
    return KEYS.get(section, [])


def test_unknown_init_arg_in_a_nested_union_error():
    message = (
        'Parser key "model":\n  Does not validate against any of the Union subtypes\n  Subtypes: [LightningModule, NoneType]\n'
        "  Errors:\n    - Option 'betaa' is not accepted\n    - Expected a <class 'NoneType'>\n  Given value: {}"
    )
    assert condense_parser_error(message, keys_of) == "unknown option model.init_args.betaa; did you mean model.init_args.beta?"


def test_unknown_trainer_option_and_unrecognized_argument():
    assert condense_parser_error("Subcommand 'fit' does not accept option 'trainer.max_epochz'", keys_of) == (
        "unknown option trainer.max_epochz; did you mean trainer.max_epochs or trainer.max_steps?"
    )
    assert condense_parser_error("unrecognized arguments: --modle=3", keys_of).startswith("unknown option modle; did you mean model")


def test_wrong_types():
    message = 'Parser key "model":\n  Errors:\n    - Parser key "beta":\n        Expected a <class \'float\'>. Got value: abc\n'
    assert condense_parser_error(message, keys_of).startswith("model.init_args.beta expects a value of type float, got 'abc'")
    union = (
        'Parser key "trainer.max_epochs":\n  Does not validate against any of the Union subtypes\n'
        "  Subtypes: [<class 'int'>, <class 'NoneType'>]\n  Errors:\n    - Expected a <class 'int'>\n  Given value type: <class 'str'>\n  Given value: abc"
    )
    assert condense_parser_error(union, keys_of).startswith("trainer.max_epochs expects a value of type int or null, got 'abc'")


def test_a_value_outside_a_choice_names_the_key_and_the_choices():
    """jsonargparse's nested error for a Literal (e.g. optimizer_implementation) used to fall through to the
    class-path branch and blame the model's class."""
    message = (
        'Parser key "model":\n  Does not validate against any of the Union subtypes\n'
        "  Subtypes: [<class 'lightning.pytorch.core.module.LightningModule'>, <class 'NoneType'>]\n  Errors:\n"
        "    - Problem with given class_path 'gen_research.models.autoencoder.vae.VAE':\n"
        '        Parser key "optimizer_implementation":\n'
        "          Expected a typing.Literal['auto', 'fused', 'foreach', 'for_loop']. Got value: fuzed\n"
        "    - Expected a <class 'NoneType'>\n  Given value: NestedArg(key='optimizer_implementation', val='fuzed')"
    )
    assert condense_parser_error(message, keys_of) == (
        "model.init_args.optimizer_implementation='fuzed' is not one of auto, fused, foreach, for_loop; "
        "fix it in the YAML or the --model.init_args.optimizer_implementation=... override"
    )


def test_anything_else_still_becomes_one_line():
    out = condense_parser_error("first problem\n  Subtypes: [x]\n  second detail\n", keys_of)
    assert "\n" not in out and "first problem" in out and "second detail" in out


def test_signature_keys():
    class Thing:
        def __init__(self, alpha: int, beta: float = 1.0, *args, **kwargs):
            pass

    assert signature_keys(Thing) == ["alpha", "beta"]
