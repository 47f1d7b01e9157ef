from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_KIND_UNSPECIFIED: _ClassVar[KeyKind]
    KEY_KIND_MY_NUMBER: _ClassVar[KeyKind]
    KEY_KIND_RESIDENT_CODE: _ClassVar[KeyKind]

class Sex(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEX_UNSPECIFIED: _ClassVar[Sex]
    SEX_MALE: _ClassVar[Sex]
    SEX_FEMALE: _ClassVar[Sex]

class ResidentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESIDENT_STATUS_UNSPECIFIED: _ClassVar[ResidentStatus]
    RESIDENT_STATUS_RESIDENT: _ClassVar[ResidentStatus]
    RESIDENT_STATUS_MOVED_ABROAD: _ClassVar[ResidentStatus]
    RESIDENT_STATUS_DECEASED: _ClassVar[ResidentStatus]
    RESIDENT_STATUS_REMOVED: _ClassVar[ResidentStatus]

class CardState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CARD_STATE_UNSPECIFIED: _ClassVar[CardState]
    CARD_STATE_NONE: _ClassVar[CardState]
    CARD_STATE_APPLIED: _ClassVar[CardState]
    CARD_STATE_ISSUED: _ClassVar[CardState]

class MatchLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MATCH_LEVEL_UNSPECIFIED: _ClassVar[MatchLevel]
    MATCH_LEVEL_EXACT: _ClassVar[MatchLevel]
    MATCH_LEVEL_NORMALISED: _ClassVar[MatchLevel]
    MATCH_LEVEL_READING: _ClassVar[MatchLevel]

class SearchOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_OUTCOME_UNSPECIFIED: _ClassVar[SearchOutcome]
    SEARCH_OUTCOME_UNIQUE: _ClassVar[SearchOutcome]
    SEARCH_OUTCOME_AMBIGUOUS: _ClassVar[SearchOutcome]
    SEARCH_OUTCOME_NOT_FOUND: _ClassVar[SearchOutcome]
KEY_KIND_UNSPECIFIED: KeyKind
KEY_KIND_MY_NUMBER: KeyKind
KEY_KIND_RESIDENT_CODE: KeyKind
SEX_UNSPECIFIED: Sex
SEX_MALE: Sex
SEX_FEMALE: Sex
RESIDENT_STATUS_UNSPECIFIED: ResidentStatus
RESIDENT_STATUS_RESIDENT: ResidentStatus
RESIDENT_STATUS_MOVED_ABROAD: ResidentStatus
RESIDENT_STATUS_DECEASED: ResidentStatus
RESIDENT_STATUS_REMOVED: ResidentStatus
CARD_STATE_UNSPECIFIED: CardState
CARD_STATE_NONE: CardState
CARD_STATE_APPLIED: CardState
CARD_STATE_ISSUED: CardState
MATCH_LEVEL_UNSPECIFIED: MatchLevel
MATCH_LEVEL_EXACT: MatchLevel
MATCH_LEVEL_NORMALISED: MatchLevel
MATCH_LEVEL_READING: MatchLevel
SEARCH_OUTCOME_UNSPECIFIED: SearchOutcome
SEARCH_OUTCOME_UNIQUE: SearchOutcome
SEARCH_OUTCOME_AMBIGUOUS: SearchOutcome
SEARCH_OUTCOME_NOT_FOUND: SearchOutcome

class RequestContext(_message.Message):
    __slots__ = ("affair", "operator_id", "request_id")
    AFFAIR_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    affair: str
    operator_id: str
    request_id: str
    def __init__(self, affair: _Optional[str] = ..., operator_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class Key(_message.Message):
    __slots__ = ("my_number", "resident_code")
    MY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    my_number: str
    resident_code: str
    def __init__(self, my_number: _Optional[str] = ..., resident_code: _Optional[str] = ...) -> None: ...

class Claims(_message.Message):
    __slots__ = ("family_name", "family_name_kana", "given_name", "given_name_kana", "birth_date", "sex", "municipality_code")
    FAMILY_NAME_FIELD_NUMBER: _ClassVar[int]
    FAMILY_NAME_KANA_FIELD_NUMBER: _ClassVar[int]
    GIVEN_NAME_FIELD_NUMBER: _ClassVar[int]
    GIVEN_NAME_KANA_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    MUNICIPALITY_CODE_FIELD_NUMBER: _ClassVar[int]
    family_name: str
    family_name_kana: str
    given_name: str
    given_name_kana: str
    birth_date: str
    sex: Sex
    municipality_code: str
    def __init__(self, family_name: _Optional[str] = ..., family_name_kana: _Optional[str] = ..., given_name: _Optional[str] = ..., given_name_kana: _Optional[str] = ..., birth_date: _Optional[str] = ..., sex: _Optional[_Union[Sex, str]] = ..., municipality_code: _Optional[str] = ...) -> None: ...

class Resident(_message.Message):
    __slots__ = ("resident_code", "my_number", "family_name", "family_name_kana", "given_name", "given_name_kana", "birth_date", "sex", "municipality_code", "municipality_name", "prefecture", "address_town", "address_block", "status", "status_date", "card_state")
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    MY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    FAMILY_NAME_FIELD_NUMBER: _ClassVar[int]
    FAMILY_NAME_KANA_FIELD_NUMBER: _ClassVar[int]
    GIVEN_NAME_FIELD_NUMBER: _ClassVar[int]
    GIVEN_NAME_KANA_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    MUNICIPALITY_CODE_FIELD_NUMBER: _ClassVar[int]
    MUNICIPALITY_NAME_FIELD_NUMBER: _ClassVar[int]
    PREFECTURE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_TOWN_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_BLOCK_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_DATE_FIELD_NUMBER: _ClassVar[int]
    CARD_STATE_FIELD_NUMBER: _ClassVar[int]
    resident_code: str
    my_number: str
    family_name: str
    family_name_kana: str
    given_name: str
    given_name_kana: str
    birth_date: str
    sex: Sex
    municipality_code: str
    municipality_name: str
    prefecture: str
    address_town: str
    address_block: str
    status: ResidentStatus
    status_date: str
    card_state: CardState
    def __init__(self, resident_code: _Optional[str] = ..., my_number: _Optional[str] = ..., family_name: _Optional[str] = ..., family_name_kana: _Optional[str] = ..., given_name: _Optional[str] = ..., given_name_kana: _Optional[str] = ..., birth_date: _Optional[str] = ..., sex: _Optional[_Union[Sex, str]] = ..., municipality_code: _Optional[str] = ..., municipality_name: _Optional[str] = ..., prefecture: _Optional[str] = ..., address_town: _Optional[str] = ..., address_block: _Optional[str] = ..., status: _Optional[_Union[ResidentStatus, str]] = ..., status_date: _Optional[str] = ..., card_state: _Optional[_Union[CardState, str]] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("context", "key", "claims", "match_level")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    MATCH_LEVEL_FIELD_NUMBER: _ClassVar[int]
    context: RequestContext
    key: Key
    claims: Claims
    match_level: MatchLevel
    def __init__(self, context: _Optional[_Union[RequestContext, _Mapping]] = ..., key: _Optional[_Union[Key, _Mapping]] = ..., claims: _Optional[_Union[Claims, _Mapping]] = ..., match_level: _Optional[_Union[MatchLevel, str]] = ...) -> None: ...

class FieldMatch(_message.Message):
    __slots__ = ("field", "match", "level")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    field: str
    match: bool
    level: MatchLevel
    def __init__(self, field: _Optional[str] = ..., match: _Optional[bool] = ..., level: _Optional[_Union[MatchLevel, str]] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("found", "matches")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    found: bool
    matches: _containers.RepeatedCompositeFieldContainer[FieldMatch]
    def __init__(self, found: _Optional[bool] = ..., matches: _Optional[_Iterable[_Union[FieldMatch, _Mapping]]] = ...) -> None: ...

class RetrieveRequest(_message.Message):
    __slots__ = ("context", "key", "fields")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    context: RequestContext
    key: Key
    fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, context: _Optional[_Union[RequestContext, _Mapping]] = ..., key: _Optional[_Union[Key, _Mapping]] = ..., fields: _Optional[_Iterable[str]] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("found", "resident", "fields")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    found: bool
    resident: Resident
    fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, found: _Optional[bool] = ..., resident: _Optional[_Union[Resident, _Mapping]] = ..., fields: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("context", "facts", "match_level", "fields")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    MATCH_LEVEL_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    context: RequestContext
    facts: Claims
    match_level: MatchLevel
    fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, context: _Optional[_Union[RequestContext, _Mapping]] = ..., facts: _Optional[_Union[Claims, _Mapping]] = ..., match_level: _Optional[_Union[MatchLevel, str]] = ..., fields: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchCandidate(_message.Message):
    __slots__ = ("agreed", "resident")
    AGREED_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    agreed: int
    resident: Resident
    def __init__(self, agreed: _Optional[int] = ..., resident: _Optional[_Union[Resident, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("outcome", "candidates", "fields")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    outcome: SearchOutcome
    candidates: _containers.RepeatedCompositeFieldContainer[SearchCandidate]
    fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, outcome: _Optional[_Union[SearchOutcome, str]] = ..., candidates: _Optional[_Iterable[_Union[SearchCandidate, _Mapping]]] = ..., fields: _Optional[_Iterable[str]] = ...) -> None: ...

class ListAffairsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Affair(_message.Message):
    __slots__ = ("code", "title", "legal_basis", "keys", "modes", "fields", "daily_quota", "used_today", "match_levels")
    CODE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    LEGAL_BASIS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    MODES_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    DAILY_QUOTA_FIELD_NUMBER: _ClassVar[int]
    USED_TODAY_FIELD_NUMBER: _ClassVar[int]
    MATCH_LEVELS_FIELD_NUMBER: _ClassVar[int]
    code: str
    title: str
    legal_basis: str
    keys: _containers.RepeatedScalarFieldContainer[KeyKind]
    modes: _containers.RepeatedScalarFieldContainer[str]
    fields: _containers.RepeatedScalarFieldContainer[str]
    daily_quota: int
    used_today: int
    match_levels: _containers.RepeatedScalarFieldContainer[MatchLevel]
    def __init__(self, code: _Optional[str] = ..., title: _Optional[str] = ..., legal_basis: _Optional[str] = ..., keys: _Optional[_Iterable[_Union[KeyKind, str]]] = ..., modes: _Optional[_Iterable[str]] = ..., fields: _Optional[_Iterable[str]] = ..., daily_quota: _Optional[int] = ..., used_today: _Optional[int] = ..., match_levels: _Optional[_Iterable[_Union[MatchLevel, str]]] = ...) -> None: ...

class ListAffairsResponse(_message.Message):
    __slots__ = ("agency_code", "agency_name", "affairs")
    AGENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    AGENCY_NAME_FIELD_NUMBER: _ClassVar[int]
    AFFAIRS_FIELD_NUMBER: _ClassVar[int]
    agency_code: str
    agency_name: str
    affairs: _containers.RepeatedCompositeFieldContainer[Affair]
    def __init__(self, agency_code: _Optional[str] = ..., agency_name: _Optional[str] = ..., affairs: _Optional[_Iterable[_Union[Affair, _Mapping]]] = ...) -> None: ...

class VerifyStreamHeader(_message.Message):
    __slots__ = ("context", "key", "retrieve_fields", "match_level")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    RETRIEVE_FIELDS_FIELD_NUMBER: _ClassVar[int]
    MATCH_LEVEL_FIELD_NUMBER: _ClassVar[int]
    context: RequestContext
    key: KeyKind
    retrieve_fields: _containers.RepeatedScalarFieldContainer[str]
    match_level: MatchLevel
    def __init__(self, context: _Optional[_Union[RequestContext, _Mapping]] = ..., key: _Optional[_Union[KeyKind, str]] = ..., retrieve_fields: _Optional[_Iterable[str]] = ..., match_level: _Optional[_Union[MatchLevel, str]] = ...) -> None: ...

class VerifyStreamRequest(_message.Message):
    __slots__ = ("header", "claims")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    header: VerifyStreamHeader
    claims: bytes
    def __init__(self, header: _Optional[_Union[VerifyStreamHeader, _Mapping]] = ..., claims: _Optional[bytes] = ...) -> None: ...

class VerifyStreamResponse(_message.Message):
    __slots__ = ("first_row", "results")
    FIRST_ROW_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    first_row: int
    results: bytes
    def __init__(self, first_row: _Optional[int] = ..., results: _Optional[bytes] = ...) -> None: ...

class SearchStreamHeader(_message.Message):
    __slots__ = ("context", "fields", "match_level")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    MATCH_LEVEL_FIELD_NUMBER: _ClassVar[int]
    context: RequestContext
    fields: _containers.RepeatedScalarFieldContainer[str]
    match_level: MatchLevel
    def __init__(self, context: _Optional[_Union[RequestContext, _Mapping]] = ..., fields: _Optional[_Iterable[str]] = ..., match_level: _Optional[_Union[MatchLevel, str]] = ...) -> None: ...

class SearchStreamRequest(_message.Message):
    __slots__ = ("header", "facts")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    header: SearchStreamHeader
    facts: bytes
    def __init__(self, header: _Optional[_Union[SearchStreamHeader, _Mapping]] = ..., facts: _Optional[bytes] = ...) -> None: ...

class SearchStreamResponse(_message.Message):
    __slots__ = ("first_row", "results")
    FIRST_ROW_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    first_row: int
    results: bytes
    def __init__(self, first_row: _Optional[int] = ..., results: _Optional[bytes] = ...) -> None: ...
