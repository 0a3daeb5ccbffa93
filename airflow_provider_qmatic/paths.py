"""Every URL path of the Qmatic API, in one table (Part B of the API contract).

Qmatic does not publish most of these paths; keeping them here means a deployment that learns
different ones corrects this file and nothing else.
"""

from __future__ import annotations

from typing import Final

TOKEN: Final = "/oauth2/token"
BRANCHES: Final = "/external/v1/branches"
SERVICES: Final = "/external/v1/branches/{branch_id}/services"
TIMESLOTS: Final = "/external/v1/branches/{branch_id}/services/{service_id}/timeslots"
RESERVATIONS: Final = "/external/v1/reservations"
RESERVATION: Final = "/external/v1/reservations/reservations/{appointment_id}"
APPOINTMENT: Final = "/external/v1/appointments/{appointment_id}"
CONFIRM: Final = "/external/v1/appointments/{appointment_id}/confirm"
RESCHEDULE: Final = "/external/v1/appointments/{appointment_id}/reschedule"
SEARCH: Final = "/external/v1/appointments/search"
