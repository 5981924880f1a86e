import { applyDecorators, UseGuards } from '@nestjs/common';
import { ApiSecurity, ApiUnauthorizedResponse } from '@nestjs/swagger';
import { ErrorEnvelopeDto } from '../docs/envelope.dto.js';
import { ApiKeyGuard } from './api-key.guard.js';

/** Protects a controller or route with x-api-key and documents it, in one decorator. */
export const ApiKeyAuth = () =>
  applyDecorators(
    UseGuards(ApiKeyGuard),
    ApiSecurity('api-key'),
    ApiUnauthorizedResponse({ description: 'Missing or wrong x-api-key', type: ErrorEnvelopeDto }),
  );
