"""The feature layout is the contract between trainer, feature store and server: pin it."""

from __future__ import annotations

from forkcast_contract.features import MODEL_INPUT_DIM, MODEL_INPUTS, feature_schema_hash


def test_model_inputs_are_user_then_restaurant_features() -> None:
    assert MODEL_INPUT_DIM == 40
    assert MODEL_INPUTS[0] == "user.f00" and MODEL_INPUTS[29] == "user.f29"
    assert MODEL_INPUTS[30] == "restaurant.f00" and MODEL_INPUTS[-1] == "restaurant.f09"


def test_schema_hash_is_stable() -> None:
    # Changing the layout must change this value; models trained on the old one are then refused by serving.
    assert feature_schema_hash() == "39c31414c69602dc"
