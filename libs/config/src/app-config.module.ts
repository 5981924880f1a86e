import { DynamicModule, Global, Module } from '@nestjs/common';
import { ConfigModule } from '@nestjs/config';
import { existsSync, readFileSync } from 'node:fs';
import { parseEnv } from 'node:util';
import { AppConfig } from './app-config.js';
import { parseConfig } from './parse-config.js';

export interface AppConfigOptions {
  /** Values that take precedence over process.env; tests pass their whole environment here. */
  overrides?: Record<string, string | undefined>;
  /** Read .env from the working directory (default true; tests turn it off). */
  readEnvFile?: boolean;
}

/** Provides AppConfig, validated once at boot, to every module. */
@Global()
@Module({})
export class AppConfigModule {
  static forRoot(options: AppConfigOptions = {}): DynamicModule {
    const readEnvFile = options.readEnvFile ?? true;
    return {
      module: AppConfigModule,
      imports: [
        // Loads .env into process.env (variables already set win), nothing more.
        ConfigModule.forRoot({ ignoreEnvFile: !readEnvFile, envFilePath: '.env' }),
      ],
      providers: [
        {
          provide: AppConfig,
          useFactory: () =>
            parseConfig(
              readEnvFile || !options.overrides
                ? { ...process.env, ...options.overrides }
                : options.overrides,
            ),
        },
      ],
      exports: [AppConfig],
    };
  }
}

/**
 * The AppConfig that AppConfigModule.forRoot(options) provides, available before Nest builds
 * the module graph: for routes mounted or not depending on config (the admin pages). Reads
 * .env below process.env, as ConfigModule does.
 */
export function loadAppConfig(options: AppConfigOptions = {}): AppConfig {
  const readEnvFile = options.readEnvFile ?? true;
  if (!readEnvFile && options.overrides) return parseConfig(options.overrides);
  const fileEnv = readEnvFile && existsSync('.env') ? parseEnv(readFileSync('.env', 'utf8')) : {};
  return parseConfig({ ...fileEnv, ...process.env, ...options.overrides });
}
